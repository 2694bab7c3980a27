// Path routing with the History API. Every path the app shows is served index.html by the
// edge, so a link from an email (/reset-password?token=...) or a reload lands on the app.
import { invalidate } from "./store.js";

export interface Location {
  path: string;
  params: URLSearchParams;
}

export function current(): Location {
  return { path: window.location.pathname, params: new URLSearchParams(window.location.search) };
}

/** Moves to a path of the app without reloading the page. */
export function navigate(to: string, options: { replace?: boolean } = {}): void {
  if (options.replace) window.history.replaceState(null, "", to);
  else window.history.pushState(null, "", to);
  window.scrollTo(0, 0);
  invalidate();
}

/** Same-origin links (<a href="/...">) move inside the app; others open normally. */
export function startRouter(): void {
  window.addEventListener("popstate", () => invalidate());
  document.addEventListener("click", (event) => {
    if (event.defaultPrevented || event.button !== 0) return;
    if (event.metaKey || event.ctrlKey || event.shiftKey || event.altKey) return;
    const anchor = (event.target as Element | null)?.closest?.("a");
    if (!anchor || anchor.target || anchor.hasAttribute("download")) return;
    const href = anchor.getAttribute("href");
    if (!href || !href.startsWith("/") || href.startsWith("//")) return;
    event.preventDefault();
    navigate(href);
  });
}

/** `/c/{id}` -> ["c", id]; matches a pattern like "/c/:id" and returns its values. */
export function match(pattern: string, path: string): Record<string, string> | null {
  const want = pattern.split("/").filter(Boolean);
  const got = path.split("/").filter(Boolean);
  if (want.length !== got.length) return null;
  const values: Record<string, string> = {};
  for (let i = 0; i < want.length; i++) {
    const part = want[i]!;
    const value = got[i]!;
    if (part.startsWith(":")) values[part.slice(1)] = decodeURIComponent(value);
    else if (part !== value) return null;
  }
  return values;
}
