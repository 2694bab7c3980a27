import { html, type TemplateResult } from "lit-html";
import type { Location } from "../router.js";

export function searchView(_location: Location): TemplateResult {
  return html`<h1>Search</h1>`;
}
