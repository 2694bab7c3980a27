// Sharing: the owner's dialog that makes, lists and revokes read-only links to a snapshot
// of a conversation, and the public page such a link opens (/s/<token>), which needs no
// account and sends no token.
import { timestampFromMs, timestampMs } from "@bufbuild/protobuf/wkt";
import { Code } from "@connectrpc/connect";
import { html, nothing, type TemplateResult } from "lit-html";
import { ref } from "lit-html/directives/ref.js";
import { unsafeHTML } from "lit-html/directives/unsafe-html.js";
import { describe, history, isCode, newId, publicHistory } from "../api.js";
import { when } from "../format.js";
import {
  Author,
  type GetSharedConversationResponse,
  type ShareLink,
  type SharedMessage,
} from "../gen/parley/history/v1/history_pb.js";
import { renderMarkdown } from "../markdown.js";
import { idle, invalidate, type Load } from "../store.js";
import { errorLine, fields, loaded } from "./page.js";

// The owner's dialog -------------------------------------------------------------------------

/**
 * "Expires in": seconds from now, or null for a link that never expires. The server only
 * asks that an expiry lie in the future (svc_history/sharing.py), so a minute is allowed.
 */
const EXPIRIES: ReadonlyArray<readonly [string, number | null]> = [
  ["1 minute", 60],
  ["1 hour", 60 * 60],
  ["1 day", 24 * 60 * 60],
  ["7 days", 7 * 24 * 60 * 60],
  ["Never", null],
];
const DEFAULT_EXPIRY = "7 days";

/** The conversation the dialog is open on; null while it is closed. */
let dialogFor: string | null = null;
let links: Load<ShareLink[]> = idle;
/** The link just made: its token is shown once, in CreateShareLink's answer, never listed. */
let created: { name: string; url: string } | null = null;
let creating = false;
let copied = false;
let dialogError: string | null = null;
let dialogGeneration = 0;

function openOn(conversation: string): void {
  dialogFor = conversation;
  created = null;
  copied = false;
  dialogError = null;
  links = { state: "loading" };
  void loadLinks(conversation);
}

/** The dialog left the page (closed, or its conversation did): the next one starts afresh. */
function forget(): void {
  dialogFor = null;
  dialogGeneration++;
}

async function loadLinks(conversation: string): Promise<void> {
  const mine = ++dialogGeneration;
  try {
    const all: ShareLink[] = [];
    let pageToken = "";
    do {
      const page = await history.listShareLinks({ parent: conversation, pageSize: 200, pageToken });
      all.push(...page.shareLinks);
      pageToken = page.nextPageToken;
    } while (pageToken);
    if (mine === dialogGeneration) links = { state: "ready", value: all };
  } catch (error) {
    if (mine === dialogGeneration) links = { state: "error", message: describe(error) };
  }
  invalidate();
}

async function create(event: Event, conversation: string): Promise<void> {
  const form = event.currentTarget as HTMLFormElement;
  const { expires = "", password = "" } = fields(event);
  const seconds = EXPIRIES.find(([label]) => label === expires)?.[1] ?? null;
  creating = true;
  copied = false;
  dialogError = null;
  invalidate();
  try {
    const reply = await history.createShareLink({
      parent: conversation,
      shareLink: seconds === null ? {} : { expireTime: timestampFromMs(Date.now() + seconds * 1000) },
      password,
      requestId: newId(),
    });
    const link = reply.shareLink;
    if (dialogFor !== conversation || !link) return;
    created = { name: link.name, url: `${window.location.origin}/s/${encodeURIComponent(link.token)}` };
    form.reset();
    void loadLinks(conversation);
  } catch (error) {
    if (dialogFor === conversation) dialogError = describe(error);
  } finally {
    creating = false;
    invalidate();
  }
}

async function revoke(link: ShareLink, conversation: string): Promise<void> {
  dialogError = null;
  try {
    await history.deleteShareLink({ name: link.name });
    if (created?.name === link.name) created = null;
  } catch (error) {
    dialogError = describe(error);
  }
  void loadLinks(conversation);
}

function copy(): void {
  if (!created) return;
  // The link stays selectable in its box when the clipboard is refused (no permission, http).
  navigator.clipboard?.writeText(created.url).then(
    () => {
      copied = true;
      invalidate();
    },
    () => undefined,
  );
}

/**
 * The <dialog> is opened modal once it is in the page: showModal() moves focus into it,
 * keeps it there, and closes it on Escape. A ref is called while lit-html still builds the
 * element, hence the microtask. Called with undefined when the dialog leaves the page.
 */
function placeDialog(element: Element | undefined): void {
  if (!element) {
    forget();
    return;
  }
  const dialog = element as HTMLDialogElement;
  queueMicrotask(() => {
    if (dialog.isConnected && !dialog.open) dialog.showModal();
  });
}

function closeDialog(event: Event, onClose: () => void): void {
  const dialog = (event.currentTarget as HTMLElement).closest("dialog");
  // close() fires the dialog's close event, which calls onClose; a dialog that never opened does not.
  if (dialog?.open) dialog.close();
  else onClose();
}

function expiry(link: ShareLink): string {
  if (!link.expireTime) return "Never expires";
  const past = timestampMs(link.expireTime) <= Date.now();
  return `${past ? "Expired" : "Expires"} ${when(link.expireTime)}`;
}

/** "Created …, expires …, password, 3 views": what the owner needs to tell links apart. */
function describeLink(link: ShareLink): string {
  return [
    link.createTime ? `Created ${when(link.createTime)}` : "",
    expiry(link),
    link.passwordProtected ? "password" : "",
    link.viewCount === 1n ? "1 view" : `${link.viewCount} views`,
  ]
    .filter(Boolean)
    .join(" · ");
}

function linkList(items: ShareLink[], conversation: string): TemplateResult {
  if (items.length === 0) return html`<p class="muted">No links yet.</p>`;
  return html`<ul class="share-links">
    ${items.map((link, index) => {
      const id = `share-link-${index}`;
      return html`<li>
        <span id=${id} class="share-link-info">${describeLink(link)}</span>
        <button type="button" aria-describedby=${id} @click=${() => revoke(link, conversation)}>Revoke</button>
      </li>`;
    })}
  </ul>`;
}

function createdLink(): TemplateResult | typeof nothing {
  if (!created) return nothing;
  return html`<div class="share-created">
    <label
      >Share link
      <input type="text" readonly .value=${created.url} @focus=${(event: Event) => (event.target as HTMLInputElement).select()} />
    </label>
    <button type="button" @click=${copy}>Copy</button>
    <span class="muted" role="status">${copied ? "Copied." : ""}</span>
  </div>`;
}

/** The share dialog for a conversation (opened from the chat's "Share" button). */
export function shareDialog(conversationName: string, onClose: () => void): TemplateResult {
  if (dialogFor !== conversationName) openOn(conversationName);
  const closed = () => {
    forget();
    onClose();
  };
  return html`<dialog class="share-dialog" aria-labelledby="share-title" ${ref(placeDialog)} @close=${closed}>
    <h2 id="share-title">Share conversation</h2>
    <p class="muted">Anyone with the link can read this conversation as it is now; later messages are not shared.</p>
    <form class="share-form" @submit=${(event: Event) => create(event, conversationName)}>
      <label
        >Expires in
        <select name="expires" autofocus>
          ${EXPIRIES.map(([label]) => html`<option value=${label} ?selected=${label === DEFAULT_EXPIRY}>${label}</option>`)}
        </select>
      </label>
      <label
        >Password
        <input type="password" name="password" autocomplete="new-password" placeholder="Optional" maxlength="256" />
      </label>
      <button type="submit" class="primary" ?disabled=${creating}>Create link</button>
    </form>
    ${createdLink()} ${errorLine(dialogError)}
    <h3>Links</h3>
    ${loaded(links, (items) => linkList(items, conversationName))}
    <div class="actions">
      <button type="button" @click=${(event: Event) => closeDialog(event, closed)}>Close</button>
    </div>
  </dialog>`;
}

// The public page ----------------------------------------------------------------------------

type Shared =
  | { kind: "loading" }
  | { kind: "ready"; reply: GetSharedConversationResponse }
  | { kind: "password"; error: string | null }
  | { kind: "gone" }
  | { kind: "error"; message: string };

/** The token loaded: a render of the same token does not call the server again. */
let sharedToken: string | null = null;
let shared: Shared = { kind: "loading" };
let opening = false;

/**
 * GetSharedConversation answers NOT_FOUND alike for an unknown, revoked or expired link,
 * PERMISSION_DENIED for a missing or wrong password, and RESOURCE_EXHAUSTED when too many
 * passwords were tried (svc_history/errors.py).
 */
async function openShared(token: string, password: string): Promise<void> {
  opening = true;
  invalidate();
  try {
    const reply = await publicHistory.getSharedConversation({ token, password });
    if (token === sharedToken) shared = { kind: "ready", reply };
  } catch (error) {
    if (token !== sharedToken) return;
    if (isCode(error, Code.NotFound)) shared = { kind: "gone" };
    else if (isCode(error, Code.PermissionDenied))
      shared = { kind: "password", error: password ? "That password is not right." : null };
    else if (isCode(error, Code.ResourceExhausted) && shared.kind === "password")
      shared = { kind: "password", error: describe(error) };
    else shared = { kind: "error", message: describe(error) };
  } finally {
    opening = false;
    invalidate();
  }
}

function sharedMessage(message: SharedMessage, index: number): TemplateResult {
  const mine = message.author === Author.USER;
  return html`<article class="message ${mine ? "user" : "assistant"}" aria-label=${mine ? "You" : "Assistant"}
    data-message=${String(index)}>
    <div class="message-body">
      ${mine ? html`<p class="plain">${message.text}</p>` : unsafeHTML(renderMarkdown(message.text))}
    </div>
  </article>`;
}

function snapshot(reply: GetSharedConversationResponse): TemplateResult {
  // A system prompt is the owner's instructions to the model, not part of the conversation read.
  const shown = reply.messages.filter((message) => message.author !== Author.SYSTEM);
  return html`<h1>${reply.title || "Shared conversation"}</h1>
    <p class="shared-note muted">
      Shared read-only conversation${reply.shareTime ? html` · shared ${when(reply.shareTime)}` : nothing}
    </p>
    <div class="messages">${shown.map(sharedMessage)}</div>`;
}

function passwordForm(token: string, error: string | null): TemplateResult {
  const submit = (event: Event) => void openShared(token, fields(event).password ?? "");
  return html`<h1>Shared conversation</h1>
    <p>This link needs a password.</p>
    ${errorLine(error)}
    <form class="shared-password" @submit=${submit}>
      <label>Password <input type="password" name="password" autocomplete="off" required autofocus /></label>
      <button type="submit" class="primary" ?disabled=${opening}>Open</button>
    </form>`;
}

function sharedBody(token: string): TemplateResult {
  switch (shared.kind) {
    case "ready":
      return snapshot(shared.reply);
    case "password":
      return passwordForm(token, shared.error);
    case "gone":
      return html`<h1>Shared conversation</h1>
        <p class="error" role="alert">This link has expired or is not available.</p>`;
    case "error":
      return html`<h1>Shared conversation</h1>
        <p class="error" role="alert">${shared.message}</p>`;
    default:
      return html`<p class="muted" role="status">Loading…</p>`;
  }
}

export function sharedView(token: string): TemplateResult {
  if (token !== sharedToken) {
    sharedToken = token;
    shared = { kind: "loading" };
    void openShared(token, "");
  }
  return html`<main id="main" class="shared">${sharedBody(token)}</main>`;
}
