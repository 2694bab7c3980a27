import { html, type TemplateResult } from "lit-html";

export function usageView(): TemplateResult {
  return html`<h1>usage</h1>`;
}
