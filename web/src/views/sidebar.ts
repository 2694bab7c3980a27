// The conversation list beside every signed-in page: the user's conversations (the server
// lists pinned ones first, then the most recently updated), a page at a time, with filters
// by folder, tag and archive, and a small menu of actions on each conversation.
import { Code } from "@connectrpc/connect";
import { html, nothing, type TemplateResult } from "lit-html";
import { keyed } from "lit-html/directives/keyed.js";
import { ref } from "lit-html/directives/ref.js";
import { repeat } from "lit-html/directives/repeat.js";
import { describe, history, isCode } from "../api.js";
import { currentUser } from "../auth.js";
import { lastId } from "../format.js";
import type { Conversation } from "../gen/parley/history/v1/history_pb.js";
import { current, match, navigate } from "../router.js";
import { invalidate } from "../store.js";
import { fields } from "./page.js";

const PAGE_SIZE = 50;
/** ListConversations never returns more than this in one page. */
const MAX_PAGE_SIZE = 200;

interface Filters {
  folder: string;
  tag: string;
  showArchived: boolean;
}

/** What a conversation's menu shows: its list of actions, one action's form, or the delete confirmation. */
type Step = "menu" | "title" | "folder" | "tags" | "delete";

let filters: Filters = { folder: "", tag: "", showArchived: false };
let items: Conversation[] = [];
let nextPageToken = "";
let loading = false;
let started = false;
let error: string | null = null;
/** Bumped by every load: an answer to an older one (other filters, a reload since) is dropped. */
let generation = 0;
/** The user the list was loaded for: another account signing in in this tab starts afresh. */
let owner: string | null = null;
/** Folders and tags seen in any listing, for the filters (a filtered listing shows only some). */
const knownFolders = new Set<string>();
const knownTags = new Set<string>();

let open: { name: string; step: Step } | null = null;
let busy = false;
/** An element to focus once it is rendered: see focusWhen. */
let focusKey: string | null = null;

// Loading ----------------------------------------------------------------------------------

/** Reads the first page again (reset) or the page after the last one shown. */
async function loadPage(reset: boolean): Promise<void> {
  const mine = ++generation;
  loading = true;
  error = null;
  invalidate();
  // A reload asks for as many as are shown, so pages read with "Load more" stay in view.
  const pageSize = reset ? Math.min(MAX_PAGE_SIZE, Math.max(PAGE_SIZE, items.length)) : PAGE_SIZE;
  try {
    const reply = await history.listConversations({
      parent: "users/me",
      pageSize,
      pageToken: reset ? "" : nextPageToken,
      showArchived: filters.showArchived,
      folder: filters.folder,
      tag: filters.tag,
    });
    if (mine !== generation) return;
    remember(reply.conversations);
    // A conversation updated between two pages can move into the next one: show it once.
    const shown = new Set(reset ? [] : items.map((item) => item.name));
    const fresh = reply.conversations.filter((item) => !shown.has(item.name));
    items = reset ? fresh : [...items, ...fresh];
    nextPageToken = reply.nextPageToken;
  } catch (failure) {
    if (mine !== generation) return;
    error = describe(failure);
  } finally {
    if (mine === generation) {
      loading = false;
      invalidate();
    }
  }
}

/** Notes the folders (with their parents: the filter includes subfolders) and tags seen. */
function remember(conversations: Conversation[]): void {
  for (const conversation of conversations) {
    const segments = conversation.folder ? conversation.folder.split("/") : [];
    segments.forEach((_, index) => knownFolders.add(segments.slice(0, index + 1).join("/")));
    conversation.tags.forEach((tag) => knownTags.add(tag));
  }
}

function setFilter(change: Partial<Filters>): void {
  filters = { ...filters, ...change };
  items = [];
  nextPageToken = "";
  open = null;
  void loadPage(true);
}

/** Called when a conversation changed (a new one, a new title): reloads the list. */
export function refreshConversations(): void {
  started = true;
  void loadPage(true);
}

/** A different account signed in in this tab: forget everything the last one's list held. */
function checkOwner(): void {
  const who = currentUser()?.name ?? null;
  if (who === null || who === owner) return;
  const switched = owner !== null;
  owner = who;
  if (!switched) return;
  filters = { folder: "", tag: "", showArchived: false };
  items = [];
  nextPageToken = "";
  knownFolders.clear();
  knownTags.clear();
  open = null;
  error = null;
  started = false;
}

// Actions ----------------------------------------------------------------------------------

type Editable = Partial<Pick<Conversation, "title" | "pinned" | "archived" | "folder" | "tags">>;

/** Changes one field; the etag makes a change made elsewhere since the list was read fail. */
async function update(conversation: Conversation, path: keyof Editable, changes: Editable): Promise<void> {
  await act(conversation, async () => {
    const reply = await history.updateConversation({
      conversation: { name: conversation.name, etag: conversation.etag, ...changes },
      updateMask: { paths: [path] },
    });
    if (reply.conversation) {
      remember([reply.conversation]);
      items = items.map((item) => (item.name === conversation.name ? reply.conversation! : item));
    }
  });
}

async function remove(conversation: Conversation): Promise<void> {
  await act(conversation, async () => {
    await history.deleteConversation({ name: conversation.name, etag: conversation.etag });
    items = items.filter((item) => item.name !== conversation.name);
    if (currentId() === lastId(conversation.name)) navigate("/", { replace: true });
  });
}

/**
 * Runs one action from a conversation's menu, then reloads the list: the server knows where
 * the conversation now belongs (pinned first, hidden when archived, outside the folder shown).
 */
async function act(conversation: Conversation, action: () => Promise<void>): Promise<void> {
  busy = true;
  error = null;
  invalidate();
  try {
    await action();
    open = null;
    focusKey = `toggle:${conversation.name}`;
  } catch (failure) {
    error = isCode(failure, Code.Aborted)
      ? `“${titleOf(conversation)}” changed elsewhere; the list now shows its latest version. Try again.`
      : describe(failure);
  } finally {
    busy = false;
    invalidate();
  }
  void loadPage(true);
}

/** Opens one step of a conversation's menu, or closes it (null), and says what to focus next. */
function show(conversation: Conversation, step: Step | null): void {
  open = step ? { name: conversation.name, step } : null;
  focusKey = step && step !== "menu" ? `${step}:${conversation.name}` : `toggle:${conversation.name}`;
  invalidate();
}

/** The "Actions for …" button: opens the menu, or closes whatever step of it is open. */
function toggle(conversation: Conversation): void {
  show(conversation, open?.name === conversation.name ? null : "menu");
}

/** Escape closes a conversation's menu and puts focus back on its toggle. */
function escape(event: KeyboardEvent, conversation: Conversation): void {
  if (event.key !== "Escape" || open?.name !== conversation.name) return;
  event.preventDefault();
  show(conversation, null);
}

function newChat(): void {
  open = null;
  // The chat resets itself when its route changes from a conversation to none.
  navigate("/");
}

// Rendering --------------------------------------------------------------------------------

function titleOf(conversation: Conversation): string {
  return conversation.title || "Untitled";
}

function currentId(): string | null {
  return match("/c/:conversation", current().path)?.conversation ?? null;
}

/** A ref that focuses its element once, when focusKey asked for it (after a render). */
function focusWhen(key: string) {
  return ref((element) => {
    if (!element || focusKey !== key) return;
    focusKey = null;
    // New elements are not in the document yet while lit-html fills them in.
    queueMicrotask(() => (element as HTMLElement).focus());
  });
}

function sorted(values: Set<string>): string[] {
  return [...values].sort((a, b) => a.localeCompare(b));
}

function filterRow(): TemplateResult {
  const choose = (key: "folder" | "tag") => (event: Event) =>
    setFilter({ [key]: (event.target as HTMLSelectElement).value });
  return html`<div class="conversation-filters">
    <label
      >Folder
      <select name="folder" @change=${choose("folder")}>
        <option value="" ?selected=${!filters.folder}>All folders</option>
        ${sorted(knownFolders).map((folder) => html`<option value=${folder} ?selected=${folder === filters.folder}>${folder}</option>`)}
      </select>
    </label>
    <label
      >Tag
      <select name="tag" @change=${choose("tag")}>
        <option value="" ?selected=${!filters.tag}>All tags</option>
        ${sorted(knownTags).map((tag) => html`<option value=${tag} ?selected=${tag === filters.tag}>${tag}</option>`)}
      </select>
    </label>
    <label class="check"
      ><input type="checkbox" name="archived" .checked=${filters.showArchived}
        @change=${(event: Event) => setFilter({ showArchived: (event.target as HTMLInputElement).checked })} />
      Show archived</label
    >
  </div>`;
}

function menu(conversation: Conversation, id: string): TemplateResult {
  return html`<ul class="conversation-menu" id=${id}>
    <li><button type="button" @click=${() => show(conversation, "title")}>Rename</button></li>
    <li>
      <button type="button" ?disabled=${busy} @click=${() => update(conversation, "pinned", { pinned: !conversation.pinned })}>
        ${conversation.pinned ? "Unpin" : "Pin"}
      </button>
    </li>
    <li>
      <button type="button" ?disabled=${busy}
        @click=${() => update(conversation, "archived", { archived: !conversation.archived })}>
        ${conversation.archived ? "Unarchive" : "Archive"}
      </button>
    </li>
    <li><button type="button" @click=${() => show(conversation, "folder")}>Move to folder</button></li>
    <li><button type="button" @click=${() => show(conversation, "tags")}>Tags</button></li>
    <li><button type="button" class="danger-text" @click=${() => show(conversation, "delete")}>Delete</button></li>
  </ul>`;
}

/** One field's inline form (Title, Folder, Tags), with Save and Cancel. */
function fieldForm(
  conversation: Conversation,
  id: string,
  step: Step,
  label: string,
  value: string,
  save: (value: string) => Promise<void>,
): TemplateResult {
  const submit = (event: Event) => void save(fields(event).value ?? "");
  // keyed: each field gets a fresh input, never the text typed into another one.
  return html`${keyed(
    `${step}:${conversation.name}`,
    html`<form class="conversation-edit" id=${id} @submit=${submit}>
      <label>${label} <input name="value" .value=${value} ${focusWhen(`${step}:${conversation.name}`)} /></label>
      <div class="actions">
        <button type="submit" class="primary" ?disabled=${busy}>Save</button>
        <button type="button" @click=${() => show(conversation, null)}>Cancel</button>
      </div>
    </form>`,
  )}`;
}

function confirmDelete(conversation: Conversation, id: string): TemplateResult {
  return html`<div class="conversation-edit" id=${id}>
    <p>Delete “${titleOf(conversation)}” and all its messages and share links?</p>
    <div class="actions">
      <button type="button" class="danger" ?disabled=${busy} @click=${() => remove(conversation)}>Confirm delete</button>
      <button type="button" ${focusWhen(`delete:${conversation.name}`)} @click=${() => show(conversation, null)}>Cancel</button>
    </div>
  </div>`;
}

function actions(conversation: Conversation, step: Step, id: string): TemplateResult {
  const parseTags = (text: string) => [...new Set(text.split(",").map((tag) => tag.trim()).filter(Boolean))];
  switch (step) {
    case "title":
      return fieldForm(conversation, id, step, "Title", conversation.title, (title) =>
        update(conversation, "title", { title: title.trim() }),
      );
    case "folder":
      return fieldForm(conversation, id, step, "Folder", conversation.folder, (folder) =>
        update(conversation, "folder", { folder: folder.trim() }),
      );
    case "tags":
      return fieldForm(conversation, id, step, "Tags", conversation.tags.join(", "), (tags) =>
        update(conversation, "tags", { tags: parseTags(tags) }),
      );
    case "delete":
      return confirmDelete(conversation, id);
    default:
      return menu(conversation, id);
  }
}

function item(conversation: Conversation, here: string | null): TemplateResult {
  const id = lastId(conversation.name);
  const title = titleOf(conversation);
  const step = open?.name === conversation.name ? open.step : null;
  const menuId = `conversation-actions-${id}`;
  const classes = ["conversation", conversation.pinned ? "pinned" : "", conversation.archived ? "archived" : ""];
  return html`<li class=${classes.join(" ")} @keydown=${(event: KeyboardEvent) => escape(event, conversation)}>
    <div class="conversation-row">
      <span class="marker" aria-hidden="true"></span>
      <a href="/c/${encodeURIComponent(id)}" aria-current=${id === here ? "page" : nothing}>${title}</a>
      <button type="button" class="icon quiet" aria-label="Actions for ${title}" aria-expanded=${step ? "true" : "false"}
        aria-controls=${step ? menuId : nothing} @click=${() => toggle(conversation)}
        ${focusWhen(`toggle:${conversation.name}`)}>⋯</button>
    </div>
    ${step ? actions(conversation, step, menuId) : nothing}
  </li>`;
}

function emptyNote(): TemplateResult | typeof nothing {
  if (items.length > 0 || error) return nothing;
  if (loading) return html`<p class="muted" role="status">Loading…</p>`;
  const filtered = filters.folder || filters.tag || filters.showArchived;
  return html`<p class="muted">${filtered ? "No conversations match these filters." : "No conversations yet."}</p>`;
}

export function sidebar(): TemplateResult {
  checkOwner();
  if (!started) {
    started = true;
    void loadPage(true);
  }
  const here = currentId();
  return html`<nav class="sidebar" aria-label="Conversations">
    <button type="button" class="primary" @click=${newChat}>New chat</button>
    ${filterRow()}
    ${error ? html`<p class="error" role="alert">${error}</p>` : nothing}
    <ul class="conversation-list">
      ${repeat(items, (conversation) => conversation.name, (conversation) => item(conversation, here))}
    </ul>
    ${emptyNote()}
    ${nextPageToken
      ? html`<button type="button" class="load-more" ?disabled=${loading} @click=${() => loadPage(false)}>Load more</button>`
      : nothing}
  </nav>`;
}
