// The operators' page: an overview with charts, top users, users (tier, disable), budgets and
// system health, one module per section over one visit's state (state.ts). Admins only: for
// anyone else it says so and makes no admin call, and a PERMISSION_DENIED from any admin call
// (a role taken away meanwhile) says the same.
import { html, type TemplateResult } from "lit-html";
import { ref } from "lit-html/directives/ref.js";
import { chat, ledger } from "../../api.js";
import { currentUser, isAdmin } from "../../auth.js";
import type { Location } from "../../router.js";
import { budgetsSection } from "./budgets.js";
import { healthSection, loadSystemHealth } from "./health.js";
import { loadReports, overviewSection } from "./overview.js";
import { fetchInto, onPage, state } from "./state.js";
import { topUsersSection } from "./top-users.js";
import { loadUsers, usersSection } from "./users.js";

export { decimalToMicros } from "./budgets.js";

function loadAll(): void {
  void fetchInto(() => ledger.getAdminOverview({}), (load) => (state.overview = load));
  void fetchInto(async () => (await chat.listModels({ pageSize: 200 })).models, (load) => (state.models = load));
  loadReports();
  loadSystemHealth();
  void loadUsers(false);
}

/** /admin/{section} scrolls to that section once, after it is drawn. */
function scrollToSection(location: Location): void {
  const wanted = location.path.split("/")[2] ?? "";
  if (!wanted || state.scrolledTo === location.path) return;
  state.scrolledTo = location.path;
  queueMicrotask(() => document.getElementById(`admin-${wanted}`)?.scrollIntoView());
}

function body(location: Location): TemplateResult {
  if (!currentUser()) return html`<h1>Admin</h1><p class="muted" role="status">Loading…</p>`;
  if (!isAdmin() || state.denied) return html`<h1>Admin</h1><p>Admins only.</p>`;
  if (state.overview.state === "idle") loadAll();
  scrollToSection(location);
  return html`<h1>Admin</h1>
    <nav class="subnav" aria-label="Admin sections">
      <a href="/admin/overview">Overview</a> <a href="/admin/top-users">Top users</a>
      <a href="/admin/users">Users</a> <a href="/admin/budgets">Budgets</a> <a href="/admin/health">System health</a>
    </nav>
    ${overviewSection()} ${topUsersSection()} ${usersSection()} ${budgetsSection()} ${healthSection()}`;
}

export function adminView(location: Location): TemplateResult {
  return html`<div class="admin" ${ref(onPage)}>${body(location)}</div>`;
}
