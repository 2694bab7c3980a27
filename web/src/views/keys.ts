import { html, type TemplateResult } from "lit-html";

export function keysView(): TemplateResult {
  return html`<h1>keys</h1>`;
}
