// The web app's entry: one render loop, path routing, the signed-in shell around each page.
import "./styles.css";
import { html, render, type TemplateResult } from "lit-html";
import { describe, session } from "./api.js";
import { currentUser, isAdmin, setUser, signedIn } from "./auth.js";
import { current, match, navigate, startRouter, type Location } from "./router.js";
import { invalidate, setRenderer } from "./store.js";
import { adminView } from "./views/admin/index.js";
import { forgotView, resetView, signInView, signOut, signUpView, verifyView } from "./views/auth.js";
import { chatView } from "./views/chat.js";
import { keysView } from "./views/keys.js";
import { searchView } from "./views/search.js";
import { sharedView } from "./views/share.js";
import { sidebar } from "./views/sidebar.js";
import { usageView } from "./views/usage.js";

const root = document.getElementById("app")!;

/** Pages anyone may open, signed in or not. */
const OPEN: Array<[string, (location: Location, values: Record<string, string>) => TemplateResult]> = [
  ["/s/:token", (_location, values) => sharedView(values.token!)],
  ["/reset-password", (location) => resetView(location)],
  ["/verify-email", (location) => verifyView(location)],
];

/** Pages for a signed-out visitor. */
const SIGNED_OUT: Record<string, (() => TemplateResult) | undefined> = {
  "/signin": signInView,
  "/signup": signUpView,
  "/forgot-password": forgotView,
};

/** Pages of the signed-in app, shown inside the shell. */
const SIGNED_IN: Array<[string, (location: Location, values: Record<string, string>) => TemplateResult]> = [
  ["/", (location) => chatView(null, location)],
  ["/c/:conversation", (location, values) => chatView(values.conversation!, location)],
  ["/search", (location) => searchView(location)],
  ["/keys", () => keysView()],
  ["/usage", () => usageView()],
  ["/admin", (location) => adminView(location)],
  ["/admin/:section", (location) => adminView(location)],
];

let userError: string | null = null;
let loadingUser = false;
async function loadUser(): Promise<void> {
  if (loadingUser) return;
  loadingUser = true;
  try {
    const reply = await session.getCurrentUser({});
    setUser(reply.user ?? null);
  } catch (error) {
    userError = describe(error);
    invalidate();
  } finally {
    loadingUser = false;
  }
}

function shell(page: TemplateResult): TemplateResult {
  const user = currentUser();
  return html`<a class="skip" href="#main">Skip to content</a>
    <div class="app">
      <header class="top">
        <a class="brand" href="/">Parley</a>
        <nav aria-label="Main">
          <a href="/search">Search</a>
          <a href="/keys">API keys</a>
          <a href="/usage">Usage</a>
          ${isAdmin() ? html`<a href="/admin">Admin</a>` : ""}
        </nav>
        <span class="who">${user?.displayName ?? ""}</span>
        <button type="button" class="quiet" @click=${signOut}>Sign out</button>
      </header>
      ${sidebar()}
      <main id="main" class="page" tabindex="-1">
        ${userError ? html`<p class="error" role="alert">${userError}</p>` : ""} ${page}
      </main>
    </div>`;
}

function route(): TemplateResult {
  const location = current();
  for (const [pattern, view] of OPEN) {
    const values = match(pattern, location.path);
    if (values) return view(location, values);
  }
  const signedOutPage = SIGNED_OUT[location.path];
  if (!signedIn()) {
    if (signedOutPage) return signedOutPage();
    const next = location.path === "/" ? "" : `?next=${encodeURIComponent(location.path + window.location.search)}`;
    queueMicrotask(() => navigate(`/signin${next}`, { replace: true }));
    return html``;
  }
  if (signedOutPage) {
    queueMicrotask(() => navigate("/", { replace: true }));
    return html``;
  }
  if (!currentUser()) void loadUser();
  for (const [pattern, view] of SIGNED_IN) {
    const values = match(pattern, location.path);
    if (values) return shell(view(location, values));
  }
  return shell(html`<h1>Not found</h1><p><a href="/">Back to your chats</a></p>`);
}

setRenderer(() => render(route(), root));
startRouter();
invalidate();
