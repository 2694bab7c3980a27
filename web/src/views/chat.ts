// The chat: the active path of a conversation, the answer streamed token by token, stop,
// regenerate and edit (branches, with arrows between siblings), a model picker, and resume
// after a reload in the middle of an answer, or on another device while it is written.
import { Code } from "@connectrpc/connect";
import { html, nothing, type TemplateResult } from "lit-html";
import { unsafeHTML } from "lit-html/directives/unsafe-html.js";
import { chat, describe, history, isCode, newId } from "../api.js";
import { currentUser } from "../auth.js";
import { FinishReason, type Model, type TurnEvent } from "../gen/parley/chat/v1/chat_pb.js";
import {
  Author,
  MessageState,
  MessageView,
  type Conversation,
  type Message,
} from "../gen/parley/history/v1/history_pb.js";
import { lastId } from "../format.js";
import { renderMarkdown } from "../markdown.js";
import { navigate, type Location } from "../router.js";
import { invalidate } from "../store.js";
import { refreshConversations } from "./sidebar.js";
import { shareDialog } from "./share.js";

/** A turn this page is streaming: kept in localStorage so a reload can resume it. */
interface Live {
  conversation: string;
  turn: string;
  sequence: number;
  userMessage: string;
  assistantMessage: string;
  /** The user message's text while it is not yet in the loaded history. */
  question: string;
  /** The last message of the active path shown above the turn; "" for the whole path. */
  after: string;
  text: string;
  done: boolean;
  abort: AbortController;
}

interface Saved {
  turn: string;
  question: string;
  after: string;
}

let models: Model[] = [];
let modelsLoaded = false;
let chosenModel = "";

let shownId: string | null = null;
let conversation: Conversation | null = null;
let messages = new Map<string, Message>();
let path: Message[] = [];
let loadError: string | null = null;
let sendError: string | null = null;
let live: Live | null = null;
let editing: string | null = null;
let sharing = false;
let focusMessage: string | null = null;
let generation = 0;

/** Live.after for an edit of the first message: nothing of the path stays above it. */
const START = "(start)";

const liveKey = (conversationId: string) => `parley.turn.${conversationId}`;

async function loadModels(): Promise<void> {
  modelsLoaded = true;
  try {
    models = (await chat.listModels({ pageSize: 200 })).models;
    invalidate();
  } catch (error) {
    sendError = describe(error);
    invalidate();
  }
}

function conversationName(id: string): string {
  const user = currentUser();
  return `${user ? user.name : "users/me"}/conversations/${id}`;
}

/** Reads the conversation and every message of every branch; the page shows the active path. */
async function load(id: string): Promise<void> {
  const mine = ++generation;
  const name = conversationName(id);
  try {
    const [reply, all] = await Promise.all([history.getConversation({ name }), listAll(name)]);
    if (mine !== generation) return;
    conversation = reply.conversation ?? null;
    messages = new Map(all.map((message) => [message.name, message]));
    path = activePath(conversation?.activeMessage ?? "");
    loadError = null;
  } catch (error) {
    if (mine !== generation) return;
    loadError = isCode(error, Code.NotFound) ? "This conversation does not exist." : describe(error);
  }
  invalidate();
  if (!live) void resumeSaved(id);
}

async function listAll(parent: string): Promise<Message[]> {
  const all: Message[] = [];
  let pageToken = "";
  do {
    const page = await history.listMessages({ parent, pageSize: 500, pageToken, view: MessageView.ALL });
    all.push(...page.messages);
    pageToken = page.nextPageToken;
  } while (pageToken);
  return all;
}

function activePath(active: string): Message[] {
  const found: Message[] = [];
  let at = messages.get(active);
  while (at) {
    found.unshift(at);
    at = at.parentMessage ? messages.get(at.parentMessage) : undefined;
  }
  return found;
}

function siblingsOf(message: Message): Message[] {
  return [...messages.values()]
    .filter((other) => other.parentMessage === message.parentMessage && other.author === message.author)
    .sort((a, b) => a.siblingIndex - b.siblingIndex);
}

/** The newest leaf under a message: where a branch's conversation continues. */
function leafUnder(message: Message): Message {
  let at = message;
  for (;;) {
    const children = [...messages.values()].filter((other) => other.parentMessage === at.name);
    if (children.length === 0) return at;
    at = children.reduce((a, b) => (b.siblingIndex > a.siblingIndex ? b : a));
  }
}

async function moveToBranch(message: Message, step: number): Promise<void> {
  const siblings = siblingsOf(message);
  const target = siblings[siblings.indexOf(message) + step];
  if (!target || !conversation) return;
  const active = leafUnder(target).name;
  path = activePath(active);
  invalidate();
  try {
    const reply = await history.updateConversation({
      conversation: { name: conversation.name, activeMessage: active },
      updateMask: { paths: ["active_message"] },
    });
    conversation = reply.conversation ?? conversation;
  } catch (error) {
    sendError = describe(error);
    invalidate();
  }
}

// Turns ------------------------------------------------------------------------------------

interface TurnRequest {
  text: string;
  parent: string;
  regenerate: boolean;
  /** An edit of the first message: the new one has no parent. */
  fromStart?: boolean;
}

async function startTurn(request: TurnRequest): Promise<void> {
  sendError = null;
  editing = null;
  const abort = new AbortController();
  const current: Live = {
    conversation: conversation?.name ?? "",
    turn: "",
    sequence: 0,
    userMessage: request.regenerate ? request.parent : "",
    assistantMessage: "",
    question: request.regenerate ? "" : request.text,
    // An edit shows the path up to the edited message's parent (none for the first
    // message); a regeneration up to the question it answers again; a new message all of it.
    after: request.fromStart ? START : request.parent,
    text: "",
    done: false,
    abort,
  };
  live = current;
  invalidate();
  const stream = chat.streamTurn(
    {
      input: {
        conversation: conversation?.name ?? "",
        text: request.regenerate ? "" : request.text,
        parentMessage: request.parent,
        model: chosenModel,
        regenerate: request.regenerate,
        branchFromStart: request.fromStart ?? false,
        idempotencyKey: newId(),
      },
    },
    { signal: abort.signal },
  );
  await follow(current, stream);
  const typed = request.parent === "" && !request.regenerate && !request.fromStart;
  if (typed && !current.turn && !abort.signal.aborted) restoreDraft(request.text);
}

/** A typed message the server never took (its turn did not start: Parley unreachable, the
 * router down) goes back into the composer to be sent again, unless something new was typed
 * there meanwhile. */
function restoreDraft(text: string): void {
  const box = document.getElementById("composer-box") as HTMLTextAreaElement | null;
  if (box && !box.value.trim()) box.value = text;
}

/** Applies a turn's events as they arrive; the stream ends with the turn, or with the page. */
async function follow(current: Live, events: AsyncIterable<{ event?: TurnEvent }>): Promise<void> {
  try {
    for await (const { event } of events) {
      if (!event || event.sequence <= current.sequence) continue;
      current.sequence = Number(event.sequence);
      apply(current, event);
      invalidate();
    }
  } catch (error) {
    if (current.abort.signal.aborted) return;
    // A saved turn whose events are gone (long finished) has nothing left to show.
    if (!(isCode(error, Code.NotFound) && current.sequence === 0)) sendError = describe(error);
  }
  await finish(current);
}

function apply(current: Live, event: TurnEvent): void {
  switch (event.kind.case) {
    case "started": {
      const started = event.kind.value;
      current.turn = event.turn;
      current.userMessage = started.userMessage;
      current.assistantMessage = started.assistantMessage;
      const conversationPart = event.turn.split("/turns/")[0]!;
      const id = lastId(conversationPart);
      current.conversation = conversationPart;
      const saved: Saved = { turn: event.turn, question: current.question, after: current.after };
      window.localStorage.setItem(liveKey(id), JSON.stringify(saved));
      if (shownId !== id) {
        // A new chat: the router created the conversation; show it at its own address.
        shownId = id;
        navigate(`/c/${id}`, { replace: true });
        refreshConversations();
      }
      break;
    }
    case "delta":
      current.text += event.kind.value.text;
      break;
    case "completed": {
      current.done = true;
      const completed = event.kind.value;
      if (completed.finishReason === FinishReason.ERROR) sendError = `The answer broke off: ${completed.errorMessage}`;
      break;
    }
  }
}

/** The turn ended (or its stream did): the stored messages replace the streamed text. */
async function finish(current: Live): Promise<void> {
  const id = lastId(current.conversation);
  if (current.done && id) window.localStorage.removeItem(liveKey(id));
  // The streamed text stays on screen until the stored messages have been read.
  if (id && shownId === id) await load(id);
  if (live === current) live = null;
  refreshConversations();
  invalidate();
}

/**
 * A turn running elsewhere (another tab or device, or this one before a reload that lost
 * its note): the active path ends with a question of a turn and nothing answers it yet.
 */
function unanswered(): Saved | null {
  const last = path[path.length - 1];
  if (!last || last.author !== Author.USER || !last.turn) return null;
  const answered = [...messages.values()].some((message) => message.parentMessage === last.name);
  return answered ? null : { turn: last.turn, question: "", after: last.name };
}

/** After a reload, or on another device: a turn still being written is followed again. */
async function resumeSaved(id: string): Promise<void> {
  const raw = window.localStorage.getItem(liveKey(id));
  if (live) return;
  let saved: Saved | null;
  try {
    saved = raw ? (JSON.parse(raw) as Saved) : unanswered();
  } catch {
    window.localStorage.removeItem(liveKey(id));
    saved = unanswered();
  }
  if (!saved) return;
  const abort = new AbortController();
  const current: Live = {
    conversation: conversationName(id),
    turn: saved.turn,
    sequence: 0,
    userMessage: "",
    assistantMessage: "",
    question: saved.question,
    after: saved.after,
    text: "",
    done: false,
    abort,
  };
  live = current;
  invalidate();
  try {
    await follow(current, chat.resumeTurn({ name: saved.turn, afterSequence: 0n }, { signal: abort.signal }));
  } catch {
    // follow reports errors itself
  }
  if (!current.done) window.localStorage.removeItem(liveKey(id));
}

async function stop(): Promise<void> {
  const current = live;
  if (!current?.turn) return;
  try {
    await chat.cancelTurn({ name: current.turn });
  } catch (error) {
    sendError = describe(error);
    invalidate();
  }
}

function send(event: Event): void {
  event.preventDefault();
  const form = event.currentTarget as HTMLFormElement;
  const box = form.elements.namedItem("message") as HTMLTextAreaElement;
  const text = box.value.trim();
  if (!text || live) return;
  box.value = "";
  void startTurn({ text, parent: "", regenerate: false });
}

function keydown(event: KeyboardEvent): void {
  if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
    event.preventDefault();
    (event.currentTarget as HTMLTextAreaElement).form?.requestSubmit();
  }
}

function saveEdit(event: Event, message: Message): void {
  event.preventDefault();
  const box = (event.currentTarget as HTMLFormElement).elements.namedItem("edited") as HTMLTextAreaElement;
  const text = box.value.trim();
  if (!text || live) return;
  void startTurn({ text, parent: message.parentMessage, regenerate: false, fromStart: !message.parentMessage });
}

// Rendering --------------------------------------------------------------------------------

function branchArrows(message: Message): TemplateResult | typeof nothing {
  if (message.siblingCount < 2) return nothing;
  const siblings = siblingsOf(message);
  const index = siblings.indexOf(message);
  return html`<span class="branches">
    <button type="button" class="icon" aria-label="Previous branch" ?disabled=${index <= 0 || !!live}
      @click=${() => moveToBranch(message, -1)}>‹</button>
    <span>${index + 1} / ${siblings.length}</span>
    <button type="button" class="icon" aria-label="Next branch" ?disabled=${index >= siblings.length - 1 || !!live}
      @click=${() => moveToBranch(message, 1)}>›</button>
  </span>`;
}

function messageView(message: Message): TemplateResult {
  const mine = message.author === Author.USER;
  const label = mine ? "You" : "Assistant";
  const focused = focusMessage !== null && lastId(message.name) === focusMessage;
  const state =
    message.state === MessageState.CANCELLED
      ? html`<span class="tag">stopped</span>`
      : message.state === MessageState.FAILED
        ? html`<span class="tag warn">incomplete</span>`
        : nothing;
  if (mine && editing === message.name) {
    return html`<article class="message user editing" aria-label=${label} data-message=${message.name}>
      <form @submit=${(event: Event) => saveEdit(event, message)}>
        <label class="sr-only" for="edit-box">Edit message</label>
        <textarea id="edit-box" name="edited" aria-label="Edit message" rows="3">${message.text}</textarea>
        <div class="actions">
          <button type="submit" class="primary">Save and send</button>
          <button type="button" @click=${() => ((editing = null), invalidate())}>Cancel</button>
        </div>
      </form>
    </article>`;
  }
  return html`<article class="message ${mine ? "user" : "assistant"} ${focused ? "focused" : ""}" aria-label=${label}
    data-message=${message.name}>
    <div class="message-body">${mine ? html`<p class="plain">${message.text}</p>` : unsafeHTML(renderMarkdown(message.text))}</div>
    <div class="message-meta">
      ${branchArrows(message)} ${state}
      ${mine
        ? html`<button type="button" class="quiet" ?disabled=${!!live} @click=${() => ((editing = message.name), invalidate())}>Edit</button>`
        : html`<button type="button" class="quiet" ?disabled=${!!live}
            @click=${() => startTurn({ text: "", parent: message.parentMessage, regenerate: true })}>Regenerate</button>`}
    </div>
  </article>`;
}

function liveView(current: Live): TemplateResult[] {
  const shown = new Set(path.map((message) => message.name));
  const parts: TemplateResult[] = [];
  if (current.question && !shown.has(current.userMessage)) {
    parts.push(html`<article class="message user" aria-label="You" data-message=${current.userMessage}>
      <div class="message-body"><p class="plain">${current.question}</p></div>
    </article>`);
  }
  parts.push(html`<article class="message assistant streaming" aria-label="Assistant" aria-busy="true"
    data-message=${current.assistantMessage}>
    <div class="message-body">${current.text ? unsafeHTML(renderMarkdown(current.text)) : html`<span class="typing">…</span>`}</div>
  </article>`);
  return parts;
}

/** The messages shown: the active path, cut where a running turn branches off. */
function shownPath(): Message[] {
  if (live?.after === START) return [];
  if (!live?.after) return path;
  const index = path.findIndex((message) => message.name === live!.after);
  return index >= 0 ? path.slice(0, index + 1) : path;
}

function modelPicker(): TemplateResult {
  const selected = chosenModel || conversation?.model || "";
  return html`<label class="model">Model
    <select name="model" @change=${(event: Event) => ((chosenModel = (event.target as HTMLSelectElement).value), invalidate())}>
      ${models.map(
        (model) => html`<option value=${model.name} ?selected=${model.name === selected}>${model.displayName}</option>`,
      )}
    </select>
  </label>`;
}

export function chatView(id: string | null, location: Location): TemplateResult {
  if (!modelsLoaded) void loadModels();
  if (id !== shownId) {
    shownId = id;
    conversation = null;
    messages = new Map();
    path = [];
    loadError = null;
    sendError = null;
    editing = null;
    sharing = false;
    if (live && lastId(live.conversation) !== id) {
      live.abort.abort();
      live = null;
    }
    if (id) void load(id);
  }
  focusMessage = location.params.get("m");
  if (focusMessage) queueMicrotask(scrollToFocus);
  const title = conversation?.title || (id ? "" : "New chat");
  return html`<section class="chat" aria-labelledby="chat-title">
    <div class="chat-head">
      <h1 id="chat-title">${title}</h1>
      ${modelPicker()}
      ${conversation ? html`<button type="button" @click=${() => ((sharing = true), invalidate())}>Share</button>` : nothing}
    </div>
    ${loadError ? html`<p class="error" role="alert">${loadError}</p>` : nothing}
    <div class="messages" role="log" aria-live="polite" aria-relevant="additions text">
      ${shownPath().map(messageView)} ${live ? liveView(live) : nothing}
    </div>
    ${sendError ? html`<p class="error" role="alert">${sendError}</p>` : nothing}
    <form class="composer" @submit=${send}>
      <label class="sr-only" for="composer-box">Message</label>
      <textarea id="composer-box" name="message" aria-label="Message" rows="3" placeholder="Message Parley…"
        @keydown=${keydown} maxlength="100000"></textarea>
      ${live
        ? html`<button type="button" class="danger" @click=${stop} ?disabled=${!live.turn}>Stop</button>`
        : html`<button type="submit" class="primary">Send</button>`}
    </form>
    ${sharing && conversation ? shareDialog(conversation.name, () => ((sharing = false), invalidate())) : nothing}
  </section>`;
}

function scrollToFocus(): void {
  if (!focusMessage) return;
  const found = document.querySelector(`article[data-message$="/messages/${CSS.escape(focusMessage)}"]`);
  if (found && !found.classList.contains("scrolled")) {
    found.classList.add("scrolled");
    found.scrollIntoView({ block: "center" });
  }
}

/** For the chat-list: true while this page streams into that conversation. */
export function streamingInto(conversationName: string): boolean {
  return live?.conversation === conversationName;
}

/** Forget the page state (sign-out). */
export function resetChat(): void {
  live?.abort.abort();
  live = null;
  shownId = null;
  conversation = null;
}
