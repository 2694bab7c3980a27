// API keys (create, list, revoke; the secret shown once) and the signed-in sessions (sign
// out one, or everywhere).
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { html, nothing, type TemplateResult } from "lit-html";
import { ref } from "lit-html/directives/ref.js";
import { describe, newId, session } from "../api.js";
import { currentUser, store } from "../auth.js";
import { when } from "../format.js";
import type { ApiKey, Session } from "../gen/parley/session/v1/session_pb.js";
import { navigate } from "../router.js";
import { idle, invalidate, type Load } from "../store.js";
import { errorLine, fields, loaded } from "./page.js";

/**
 * The scopes an API key may carry: svc_session's API_KEY_SCOPES (every user scope but
 * "account"). The server checks them too; this list only draws the checkboxes.
 */
const SCOPES: Array<[string, string]> = [
  ["chat", "Start and continue chats"],
  ["history.read", "Read conversations"],
  ["history.write", "Change and delete conversations"],
  ["usage.read", "Read usage and budgets"],
];

const EXPIRIES: Array<[string, string]> = [
  ["", "Never"],
  ["7", "In 7 days"],
  ["30", "In 30 days"],
  ["90", "In 90 days"],
  ["365", "In a year"],
];

let keys: Load<ApiKey[]> = idle;
let sessions: Load<Session[]> = idle;
/** The secret of the key just created: shown once, forgotten on leaving the page. */
let created: { displayName: string; secret: string } | null = null;
let createError: string | null = null;
let actionError: string | null = null;
let notice: string | null = null;
let busy = false;
/** Bumped on leaving the page, so answers to an earlier visit are dropped. */
let visit = 0;

/** Leaving the page forgets everything, so the next visit loads afresh. */
function onPage(element: Element | undefined): void {
  if (element) return;
  visit++;
  keys = idle;
  sessions = idle;
  created = null;
  createError = actionError = notice = null;
}

async function loadKeys(): Promise<void> {
  const mine = visit;
  keys = { state: "loading" };
  try {
    const all: ApiKey[] = [];
    let pageToken = "";
    // A person holds a handful of keys: read every page rather than paginate the table.
    do {
      const reply = await session.listApiKeys({ parent: "users/me", pageSize: 200, pageToken, showRevoked: true });
      all.push(...reply.apiKeys);
      pageToken = reply.nextPageToken;
    } while (pageToken);
    if (mine === visit) keys = { state: "ready", value: all };
  } catch (error) {
    if (mine === visit) keys = { state: "error", message: describe(error) };
  }
  invalidate();
}

async function loadSessions(): Promise<void> {
  const mine = visit;
  sessions = { state: "loading" };
  try {
    const reply = await session.listSessions({ parent: "users/me", pageSize: 200 });
    if (mine === visit) sessions = { state: "ready", value: reply.sessions };
  } catch (error) {
    if (mine === visit) sessions = { state: "error", message: describe(error) };
  }
  invalidate();
}

/** Runs a button's call with the page busy; its failure shows above the lists. */
async function act(action: () => Promise<void>): Promise<void> {
  busy = true;
  actionError = notice = null;
  invalidate();
  try {
    await action();
  } catch (error) {
    actionError = describe(error);
  } finally {
    busy = false;
    invalidate();
  }
}

function expiry(days: string): Date | null {
  if (!days) return null;
  return new Date(Date.now() + Number(days) * 24 * 3600 * 1000);
}

async function createKey(event: Event): Promise<void> {
  const form = event.currentTarget as HTMLFormElement;
  const values = fields(event);
  const scopes = new FormData(form).getAll("scope").map(String);
  createError = null;
  created = null;
  if (scopes.length === 0) {
    createError = "Choose at least one scope.";
    invalidate();
    return;
  }
  const expires = expiry(values.expires ?? "");
  busy = true;
  invalidate();
  try {
    const reply = await session.createApiKey({
      parent: "users/me",
      requestId: newId(),
      apiKey: {
        displayName: values.name ?? "",
        scopes,
        expireTime: expires ? timestampFromDate(expires) : undefined,
      },
    });
    created = { displayName: reply.apiKey?.displayName ?? values.name ?? "", secret: reply.key };
    form.reset();
    void loadKeys();
  } catch (error) {
    // An unverified email is FAILED_PRECONDITION with the server's own explanation.
    createError = describe(error);
  } finally {
    busy = false;
    invalidate();
  }
}

function revokeKey(key: ApiKey): Promise<void> {
  return act(async () => {
    await session.revokeApiKey({ name: key.name });
    notice = `The key “${key.displayName}” is revoked.`;
    await loadKeys();
  });
}

function revokeSession(target: Session): Promise<void> {
  return act(async () => {
    await session.revokeSession({ name: target.name });
    notice = "That session is signed out.";
    await loadSessions();
  });
}

function endAll(): Promise<void> {
  return act(async () => {
    await session.endAllSessions({ parent: "users/me" });
    // Every token of this user, this page's included, stops working: sign in again.
    store(null, null);
    navigate("/signin", { replace: true });
  });
}

async function resendVerification(): Promise<void> {
  await act(async () => {
    await session.resendVerificationEmail({});
    notice = "A new verification link is on its way to your email.";
  });
}

function keyState(key: ApiKey): TemplateResult {
  if (key.revokeTime) {
    return html`<span class="tag warn">Revoked</span> <span class="muted small">${when(key.revokeTime)}</span>`;
  }
  if (key.expireTime && Number(key.expireTime.seconds) * 1000 <= Date.now()) {
    return html`<span class="tag warn">Expired</span>`;
  }
  return html`<span class="tag">Active</span>`;
}

function keyRow(key: ApiKey): TemplateResult {
  const active = !key.revokeTime && !(key.expireTime && Number(key.expireTime.seconds) * 1000 <= Date.now());
  const id = `key-${key.name.replaceAll("/", "-")}`;
  return html`<tr>
    <th scope="row" id=${id} class="wrap">${key.displayName}</th>
    <td><code>${key.keyPrefix}…</code></td>
    <td class="wrap">${key.scopes.join(", ")}</td>
    <td>${when(key.createTime)}</td>
    <td>${key.expireTime ? when(key.expireTime) : "Never"}</td>
    <td class="wrap">${keyState(key)}</td>
    <td>
      ${active
        ? html`<button type="button" aria-describedby=${id} ?disabled=${busy} @click=${() => revokeKey(key)}>
            Revoke
          </button>`
        : nothing}
    </td>
  </tr>`;
}

function keyTable(list: ApiKey[]): TemplateResult {
  if (list.length === 0) return html`<p class="muted">You have no API keys yet.</p>`;
  return html`<div class="table-scroll">
    <table aria-label="Your API keys">
      <thead>
        <tr>
          <th scope="col">Name</th>
          <th scope="col">Prefix</th>
          <th scope="col">Scopes</th>
          <th scope="col">Created</th>
          <th scope="col">Expires</th>
          <th scope="col">State</th>
          <th scope="col"><span class="sr-only">Actions</span></th>
        </tr>
      </thead>
      <tbody>
        ${list.map(keyRow)}
      </tbody>
    </table>
  </div>`;
}

function newKey(): TemplateResult | typeof nothing {
  if (!created) return nothing;
  const copy = () => void navigator.clipboard?.writeText(created?.secret ?? "");
  return html`<div class="secret-box">
    <p role="status">
      <strong>Your new key “${created.displayName}” is ready.</strong> Copy it now: it will not be shown again.
    </p>
    <label
      >New key
      <input type="text" readonly spellcheck="false" .value=${created.secret} @focus=${selectAll} ${ref(focusOnce)}
    /></label>
    <div class="actions">
      <button type="button" @click=${copy}>Copy</button>
      <button type="button" class="quiet" @click=${() => ((created = null), invalidate())}>Done</button>
    </div>
  </div>`;
}

/** Moves the keyboard to the new secret once, when it appears (a stable ref callback). */
function focusOnce(element: Element | undefined): void {
  if (element instanceof HTMLInputElement) queueMicrotask(() => element.focus());
}

function selectAll(event: Event): void {
  (event.currentTarget as HTMLInputElement).select();
}

function unverified(): TemplateResult | typeof nothing {
  if (currentUser()?.emailVerified !== false) return nothing;
  return html`<p class="notice-box">
    Your email address is not verified yet, and API keys need a verified address. Open the link mailed at
    sign-up, or
    <button type="button" class="link" ?disabled=${busy} @click=${resendVerification}>send a new link</button>.
  </p>`;
}

function createForm(): TemplateResult {
  return html`<section class="panel" aria-labelledby="create-key-title">
    <h2 id="create-key-title">Create API key</h2>
    ${unverified()}
    <form class="stack" aria-labelledby="create-key-title" @submit=${createKey}>
      <label>Name <input name="name" required maxlength="100" autocomplete="off" /></label>
      <fieldset class="checks">
        <legend>Scopes</legend>
        ${SCOPES.map(
          ([scope, meaning]) => html`<div class="check">
            <label
              ><input type="checkbox" name="scope" value=${scope} aria-describedby=${`scope-${scope}`} />
              ${scope}</label
            >
            <span class="muted" id=${`scope-${scope}`}>${meaning}</span>
          </div>`,
        )}
      </fieldset>
      <label
        >Expires
        <select name="expires">
          ${EXPIRIES.map(([days, text]) => html`<option value=${days}>${text}</option>`)}
        </select>
      </label>
      ${errorLine(createError)}
      <button type="submit" class="primary" ?disabled=${busy}>Create key</button>
    </form>
    ${newKey()}
  </section>`;
}

function sessionRow(entry: Session): TemplateResult {
  const id = `session-${entry.name.replaceAll("/", "-")}`;
  return html`<tr>
    <th scope="row" id=${id} class="wrap">${entry.userAgent || "Unknown client"}</th>
    <td>${entry.clientAddress}</td>
    <td>${when(entry.createTime)}</td>
    <td>${when(entry.lastRefreshTime)}</td>
    <td>
      ${entry.current
        ? html`<span class="tag">This device</span>`
        : html`<button type="button" aria-describedby=${id} ?disabled=${busy} @click=${() => revokeSession(entry)}>
            Sign out
          </button>`}
    </td>
  </tr>`;
}

function sessionsSection(): TemplateResult {
  return html`<section class="panel" aria-labelledby="sessions-title">
    <h2 id="sessions-title">Sessions</h2>
    <p class="muted">Where you are signed in, most recently used first.</p>
    ${loaded(
      sessions,
      (list) => html`<div class="table-scroll">
        <table aria-label="Sessions">
          <thead>
            <tr>
              <th scope="col">Client</th>
              <th scope="col">Address</th>
              <th scope="col">Signed in</th>
              <th scope="col">Last active</th>
              <th scope="col"><span class="sr-only">Actions</span></th>
            </tr>
          </thead>
          <tbody>
            ${list.map(sessionRow)}
          </tbody>
        </table>
      </div>`,
    )}
    <button type="button" class="danger" ?disabled=${busy} @click=${endAll}>Sign out everywhere</button>
  </section>`;
}

export function keysView(): TemplateResult {
  if (keys.state === "idle") void loadKeys();
  if (sessions.state === "idle") void loadSessions();
  return html`<div class="narrow" ${ref(onPage)}>
    <h1>API keys</h1>
    <p class="muted">Keys let your programs call Parley as you, limited to the scopes you choose.</p>
    ${errorLine(actionError)} ${notice ? html`<p class="notice" role="status">${notice}</p>` : nothing}
    <section class="panel" aria-labelledby="your-keys-title">
      <h2 id="your-keys-title">Your keys</h2>
      ${loaded(keys, keyTable)}
    </section>
    ${createForm()} ${sessionsSection()}
  </div>`;
}
