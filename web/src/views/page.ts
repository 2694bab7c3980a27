// Pieces every page uses: a status line, a page heading, a loading/error frame.
import { html, nothing, type TemplateResult } from "lit-html";
import type { Load } from "../store.js";

export function errorLine(message: string | null): TemplateResult | typeof nothing {
  return message ? html`<p class="error" role="alert">${message}</p>` : nothing;
}

export function loaded<T>(load: Load<T>, body: (value: T) => TemplateResult): TemplateResult {
  switch (load.state) {
    case "ready":
      return body(load.value);
    case "error":
      return html`<p class="error" role="alert">${load.message}</p>`;
    default:
      return html`<p class="muted" role="status">Loading…</p>`;
  }
}

/** Reads a form's named fields as strings. */
export function fields(event: Event): Record<string, string> {
  event.preventDefault();
  const form = event.currentTarget as HTMLFormElement;
  const values: Record<string, string> = {};
  for (const [key, value] of new FormData(form).entries()) values[key] = String(value);
  return values;
}
