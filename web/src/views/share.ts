import { html, type TemplateResult } from "lit-html";

/** The share dialog for a conversation (opened from the chat's "Share" button). */
export function shareDialog(_conversation: string, _onClose: () => void): TemplateResult {
  return html``;
}

export function sharedView(_token: string): TemplateResult {
  return html`<main id="main"><h1>Shared conversation</h1></main>`;
}
