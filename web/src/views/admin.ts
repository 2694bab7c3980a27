import { html, type TemplateResult } from "lit-html";
import type { Location } from "../router.js";

export function adminView(_location: Location): TemplateResult {
  return html`<h1>Admin</h1>`;
}
