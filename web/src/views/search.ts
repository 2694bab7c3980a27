// Search over the user's own messages, by words, by meaning or both. The query lives in the
// address (/search?q=...&mode=...), so a search survives a reload and Back returns to it;
// the page searches whenever the address names a search it has not shown yet.
import { Code } from "@connectrpc/connect";
import { html, nothing, type TemplateResult } from "lit-html";
import { describe, history, isCode } from "../api.js";
import { when } from "../format.js";
import { Author, SearchMode, type SearchHit, type TextRange } from "../gen/parley/history/v1/history_pb.js";
import { navigate, type Location } from "../router.js";
import { invalidate } from "../store.js";
import { fields } from "./page.js";

/** The modes offered: the enum value, its name in the address, its label. */
const MODES: ReadonlyArray<readonly [SearchMode, string, string]> = [
  [SearchMode.HYBRID, "hybrid", "Hybrid"],
  [SearchMode.FULL_TEXT, "full_text", "Full text"],
  [SearchMode.SEMANTIC, "semantic", "Semantic"],
];
/** SearchMessagesRequest.query takes 1 to 500 characters. */
const MAX_QUERY = 500;

/** The search shown: its mode and query; null before the first. */
let shown: string | null = null;
let hits: SearchHit[] = [];
let nextPageToken = "";
let loading = false;
let searched = false;
let error: string | null = null;
let generation = 0;
/** The query and mode of the search shown, for "Load more". */
let active: { query: string; mode: SearchMode } = { query: "", mode: SearchMode.HYBRID };

/** The mode an address names; lenient ("full-text", "FULL_TEXT", "fulltext"), hybrid by default. */
function modeFrom(param: string | null): SearchMode {
  const wanted = (param ?? "").toLowerCase().replace(/[^a-z]/g, "");
  const found = MODES.find(([, name]) => name.replace(/_/g, "") === wanted);
  return found ? found[0] : SearchMode.HYBRID;
}

function modeName(mode: SearchMode): string {
  return MODES.find(([value]) => value === mode)?.[1] ?? "hybrid";
}

async function run(query: string, mode: SearchMode, pageToken: string): Promise<void> {
  const mine = ++generation;
  loading = true;
  error = null;
  invalidate();
  try {
    const reply = await history.searchMessages({ parent: "users/me", query, mode, pageToken });
    if (mine !== generation) return;
    hits = pageToken ? [...hits, ...reply.hits] : reply.hits;
    nextPageToken = reply.nextPageToken;
    searched = true;
  } catch (failure) {
    if (mine !== generation) return;
    error = isCode(failure, Code.Unavailable)
      ? "Search is unavailable right now; try again in a moment."
      : describe(failure);
  } finally {
    if (mine === generation) {
      loading = false;
      invalidate();
    }
  }
}

function submit(event: Event): void {
  const { q = "", mode = "" } = fields(event);
  const query = q.trim();
  if (!query) return;
  const to = `/search?${new URLSearchParams({ q: query, mode: modeName(modeFrom(mode)) })}`;
  // Submitting the same search again runs it again: newer messages may match now.
  shown = null;
  navigate(to, { replace: to === window.location.pathname + window.location.search });
}

// Rendering --------------------------------------------------------------------------------

/**
 * The snippet with its matches in <mark>, built as text nodes: the snippet is whatever a
 * message said, so it is never parsed as HTML. Ranges count code points, not UTF-16 units.
 */
function highlighted(snippet: string, matches: TextRange[]): Array<string | TemplateResult> {
  const chars = Array.from(snippet);
  const parts: Array<string | TemplateResult> = [];
  let at = 0;
  for (const { start, end } of [...matches].sort((a, b) => a.start - b.start)) {
    const from = Math.max(start, at);
    const to = Math.min(end, chars.length);
    if (from >= to) continue; // empty, overlapping or outside the snippet
    if (from > at) parts.push(chars.slice(at, from).join(""));
    parts.push(html`<mark>${chars.slice(from, to).join("")}</mark>`);
    at = to;
  }
  if (at < chars.length) parts.push(chars.slice(at).join(""));
  return parts;
}

function authorLabel(author: Author): string {
  switch (author) {
    case Author.USER:
      return "You";
    case Author.ASSISTANT:
      return "Assistant";
    case Author.SYSTEM:
      return "System";
    default:
      return "";
  }
}

/** `/c/<conversation>?m=<message>` from `users/{u}/conversations/{c}/messages/{m}`. */
function hitLink(messageName: string): string {
  const [, , , conversation = "", , message = ""] = messageName.split("/");
  return `/c/${encodeURIComponent(conversation)}?m=${encodeURIComponent(message)}`;
}

function hitView(hit: SearchHit): TemplateResult {
  const message = hit.message;
  return html`<li>
    <a class="search-hit" href=${hitLink(message?.name ?? "")}>
      <span class="search-hit-title">${hit.conversationTitle || "Untitled"}</span>
      <span class="search-hit-meta">${authorLabel(message?.author ?? Author.UNSPECIFIED)}
        ${message?.createTime ? html` · ${when(message.createTime)}` : nothing}</span>
      <span class="search-hit-snippet">${highlighted(hit.snippet, hit.snippetMatches)}</span>
    </a>
  </li>`;
}

function results(): TemplateResult | typeof nothing {
  if (loading && hits.length === 0) return html`<p class="muted" role="status">Searching…</p>`;
  if (!searched) return nothing;
  if (hits.length === 0) return html`<p class="muted" role="status">No messages match.</p>`;
  return html`<ol class="search-results">
      ${hits.map(hitView)}
    </ol>
    ${nextPageToken
      ? html`<button type="button" class="load-more" ?disabled=${loading} @click=${loadMore}>Load more</button>`
      : nothing}`;
}

function loadMore(): void {
  void run(active.query, active.mode, nextPageToken);
}

export function searchView(location: Location): TemplateResult {
  const query = (location.params.get("q") ?? "").trim().slice(0, MAX_QUERY);
  const mode = modeFrom(location.params.get("mode"));
  const key = `${mode}\n${query}`;
  if (key !== shown) {
    shown = key;
    active = { query, mode };
    hits = [];
    nextPageToken = "";
    searched = false;
    error = null;
    if (query) void run(query, mode, "");
    else generation++; // an empty search drops any answer still on its way
  }
  return html`<section class="search" aria-labelledby="search-title">
    <h1 id="search-title">Search</h1>
    <form class="search-form" role="search" @submit=${submit}>
      <label class="search-query"
        >Search your conversations
        <input type="text" name="q" .value=${query} required maxlength=${MAX_QUERY} autocomplete="off" />
      </label>
      <label
        >Mode
        <select name="mode">
          ${MODES.map(([value, name, label]) => html`<option value=${name} ?selected=${value === mode}>${label}</option>`)}
        </select>
      </label>
      <button type="submit" class="primary">Search</button>
    </form>
    ${error ? html`<p class="error" role="alert">${error}</p>` : nothing} ${results()}
  </section>`;
}
