// The operators' page: an overview with charts, top users, users (tier, disable), budgets and
// system health. Admins only: for anyone else it says so and makes no admin call, and a
// PERMISSION_DENIED from any admin call (a role taken away meanwhile) says the same.
import { Code } from "@connectrpc/connect";
import { timestampFromDate, type Timestamp } from "@bufbuild/protobuf/wkt";
import { html, noChange, nothing, type TemplateResult } from "lit-html";
import { live } from "lit-html/directives/live.js";
import { ref } from "lit-html/directives/ref.js";
import { chat, describe, isCode, ledger, session } from "../api.js";
import { currentUser, isAdmin } from "../auth.js";
import { lastId, microsToDecimal, money, when } from "../format.js";
import { ModelHealth as Readiness, type Model } from "../gen/parley/chat/v1/chat_pb.js";
import type { Money } from "../gen/parley/common/v1/common_pb.js";
import {
  BudgetState,
  ComponentKind,
  HealthState,
  SpendDimension,
  type ComponentHealth,
  type GetAdminOverviewResponse,
  type GetBudgetResponse,
  type GetSystemHealthResponse,
  type SpendRow,
} from "../gen/parley/ledger/v1/ledger_pb.js";
import { Role, type User } from "../gen/parley/session/v1/session_pb.js";
import type { Location } from "../router.js";
import { idle, invalidate, type Load } from "../store.js";
import { barChart, microsToUnits } from "./charts.js";
import { errorLine, loaded } from "./page.js";

/**
 * The tiers svc_session knows by default (its settings' tiers). No API lists them, so the
 * select offers these plus any tier a listed user has; the server rejects an unknown one.
 */
const KNOWN_TIERS = ["free", "pro", "enterprise"];
const REPORT_DAYS = [7, 30, 90];
const DAY_MS = 24 * 3600 * 1000;

// -- state of one visit; onPage() forgets it on leaving ----------------------------------

let visit = 0;
/** An admin call answered PERMISSION_DENIED: the page says "Admins only." */
let denied = false;
let reportDays = 30;
let overview: Load<GetAdminOverviewResponse> = idle;
let byDay: Load<SpendRow[]> = idle;
let byModel: Load<SpendRow[]> = idle;
let byUser: Load<SpendRow[]> = idle;
let models: Load<Model[]> = idle;
let systemHealth: Load<GetSystemHealthResponse> = idle;
/** GetSystemHealth is running (the last answer stays on screen meanwhile). */
let healthChecking = false;
let users: Load<User[]> = idle;
let usersNext = "";
let emailPrefix = "";
let usersError: string | null = null;
let usersNotice: string | null = null;
/** Users with an UpdateUser in flight; their controls wait. */
const updating = new Map<string, Promise<void>>();
let budgetTarget = "tiers/free";
let softText = "";
let hardText = "";
let budget: Load<GetBudgetResponse> = idle;
let budgetError: string | null = null;
let budgetNotice: string | null = null;
let budgetBusy = false;
/** The section of /admin/{section} already scrolled to, so re-renders do not scroll again. */
let scrolledTo = "";

function onPage(element: Element | undefined): void {
  if (element) return;
  visit++;
  denied = false;
  overview = byDay = byModel = byUser = models = users = budget = idle;
  systemHealth = idle;
  healthChecking = false;
  usersNext = "";
  usersError = usersNotice = budgetError = budgetNotice = null;
  updating.clear();
  scrolledTo = "";
}

// -- loading --------------------------------------------------------------------------

/**
 * Runs an admin call for this visit and stores what it answered; PERMISSION_DENIED turns the
 * whole page into "Admins only.". An answer to an earlier visit is dropped.
 */
async function fetchInto<T>(call: () => Promise<T>, set: (load: Load<T>) => void): Promise<void> {
  const mine = visit;
  set({ state: "loading" });
  try {
    const value = await call();
    if (mine === visit) set({ state: "ready", value });
  } catch (error) {
    if (mine !== visit) return;
    if (isCode(error, Code.PermissionDenied)) denied = true;
    set({ state: "error", message: describe(error) });
  } finally {
    invalidate();
  }
}

function reportRange(): { startTime: Timestamp } {
  return { startTime: timestampFromDate(new Date(Date.now() - reportDays * DAY_MS)) };
}

async function report(dimension: SpendDimension, pageSize: number): Promise<SpendRow[]> {
  return (await ledger.getSpendReport({ dimension, pageSize, ...reportRange() })).rows;
}

function loadReports(): void {
  void fetchInto(() => report(SpendDimension.DAY, 1000), (load) => (byDay = load));
  void fetchInto(() => report(SpendDimension.MODEL, 1000), (load) => (byModel = load));
  void fetchInto(() => report(SpendDimension.USER, 10), (load) => (byUser = load));
}

function loadAll(): void {
  void fetchInto(() => ledger.getAdminOverview({}), (load) => (overview = load));
  void fetchInto(async () => (await chat.listModels({ pageSize: 200 })).models, (load) => (models = load));
  loadReports();
  loadSystemHealth();
  void loadUsers(false);
}

function loadSystemHealth(): void {
  if (healthChecking) return;
  healthChecking = true;
  void fetchInto(
    async () => {
      try {
        return await ledger.getSystemHealth({});
      } finally {
        healthChecking = false;
      }
    },
    // "Refresh" keeps the last answer on screen while the probes run again.
    (load) => (systemHealth = load.state === "loading" && systemHealth.state === "ready" ? systemHealth : load),
  );
}

async function loadUsers(more: boolean): Promise<void> {
  const pageToken = more ? usersNext : "";
  const before = more && users.state === "ready" ? users.value : [];
  await fetchInto(
    async () => {
      const reply = await session.listUsers({ pageSize: 50, pageToken, emailPrefix });
      usersNext = reply.nextPageToken;
      return [...before, ...reply.users];
    },
    // "Load more" keeps the rows on screen while the next page loads.
    (load) => (users = load.state === "loading" && more ? users : load),
  );
}

function chooseDays(event: Event): void {
  reportDays = Number((event.currentTarget as HTMLSelectElement).value);
  loadReports();
}

// -- small formatting -----------------------------------------------------------------

const count = (value: bigint): string => value.toLocaleString();
const tokens = (row: { usage?: { inputTokens: bigint; outputTokens: bigint } | undefined }): bigint =>
  (row.usage?.inputTokens ?? 0n) + (row.usage?.outputTokens ?? 0n);

/** The users loaded in the Users section, by name, to show emails in place of ids. */
function userLabel(name: string): string {
  if (users.state !== "ready") return name;
  const found = users.value.find((user) => user.name === name);
  return found ? found.email : name;
}

function section(id: string, title: string, body: TemplateResult): TemplateResult {
  return html`<section class="panel" id=${`admin-${id}`} aria-labelledby=${`admin-${id}-title`}>
    <h2 id=${`admin-${id}-title`}>${title}</h2>
    ${body}
  </section>`;
}

function scroller(body: TemplateResult): TemplateResult {
  return html`<div class="table-scroll">${body}</div>`;
}

// -- Overview: numbers of the last 24 hours, and charts of the report period -------------

function overviewStats(value: GetAdminOverviewResponse): TemplateResult {
  return html`<dl class="stats">
    <div><dt>Active users</dt><dd>${count(value.activeUsers)}</dd></div>
    <div><dt>Turns</dt><dd>${count(value.turns)}</dd></div>
    <div><dt>Failed turns</dt><dd>${count(value.failedTurns)}</dd></div>
    <div><dt>Cancelled turns</dt><dd>${count(value.cancelledTurns)}</dd></div>
    <div><dt>Input tokens</dt><dd>${count(value.usage?.inputTokens ?? 0n)}</dd></div>
    <div><dt>Output tokens</dt><dd>${count(value.usage?.outputTokens ?? 0n)}</dd></div>
    <div><dt>Cost</dt><dd>${money(value.cost)}</dd></div>
  </dl>`;
}

/** Every day of the report period, days without spend at zero, so the axis is time. */
function everyDay(rows: SpendRow[]): Array<{ day: string; micros: bigint; currency: string }> {
  const byKey = new Map(rows.map((row) => [row.key, row]));
  const currency = rows[0]?.cost?.currencyCode ?? "";
  const days: Array<{ day: string; micros: bigint; currency: string }> = [];
  for (let t = Date.now() - reportDays * DAY_MS; t <= Date.now() + DAY_MS / 2; t += DAY_MS) {
    const day = new Date(t).toISOString().slice(0, 10);
    if (days.at(-1)?.day !== day) days.push({ day, micros: byKey.get(day)?.cost?.micros ?? 0n, currency });
  }
  return days;
}

function numbersTable(caption: string, head: [string, string], rows: Array<[string, string]>): TemplateResult {
  return scroller(html`<table>
    <caption class="sr-only">${caption}</caption>
    <thead>
      <tr><th scope="col">${head[0]}</th><th scope="col" class="num">${head[1]}</th></tr>
    </thead>
    <tbody>
      ${rows.map(([key, value]) => html`<tr><th scope="row">${key}</th><td class="num">${value}</td></tr>`)}
    </tbody>
  </table>`);
}

function currencyOf(rows: SpendRow[]): string {
  return rows[0]?.cost?.currencyCode ?? (overview.state === "ready" ? (overview.value.cost?.currencyCode ?? "") : "");
}

function costByDay(rows: SpendRow[]): TemplateResult {
  const days = everyDay(rows);
  const currency = currencyOf(rows);
  return barChart(
    "chart-cost-by-day",
    "Cost by day",
    { labels: days.map((d) => d.day), values: days.map((d) => microsToUnits(d.micros)), unit: currency },
    numbersTable(
      "Cost by day",
      ["Day (UTC)", `Cost (${currency})`],
      days.map((d) => [d.day, microsToDecimal(d.micros)]),
    ),
  );
}

function costByModel(rows: SpendRow[]): TemplateResult {
  const currency = currencyOf(rows);
  return barChart(
    "chart-cost-by-model",
    "Cost by model",
    {
      labels: rows.map((row) => lastId(row.key)),
      values: rows.map((row) => microsToUnits(row.cost?.micros ?? 0n)),
      unit: currency,
      horizontal: true,
    },
    numbersTable(
      "Cost by model",
      ["Model", `Cost (${currency})`],
      rows.map((row) => [lastId(row.key), microsToDecimal(row.cost?.micros ?? 0n)]),
    ),
  );
}

function turnsByModel(rows: SpendRow[]): TemplateResult {
  return barChart(
    "chart-turns-by-model",
    "Turns by model",
    {
      labels: rows.map((row) => lastId(row.key)),
      values: rows.map((row) => Number(row.turns)),
      unit: "turns",
      horizontal: true,
    },
    numbersTable(
      "Turns by model",
      ["Model", "Turns"],
      rows.map((row) => [lastId(row.key), count(row.turns)]),
    ),
  );
}

function overviewSection(): TemplateResult {
  return section(
    "overview",
    "Overview",
    html`<h3>Last 24 hours</h3>
      ${loaded(overview, overviewStats)}
      <div class="section-head">
        <h3>Spend</h3>
        <label class="inline"
          >Report period
          <select @change=${chooseDays}>
            ${REPORT_DAYS.map(
              (days) => html`<option value=${days} ?selected=${days === reportDays}>Last ${days} days</option>`,
            )}
          </select>
        </label>
      </div>
      <div class="charts">
        ${loaded(byDay, costByDay)}
        ${loaded(byModel, (rows) => html`${costByModel(rows)} ${turnsByModel(rows)}`)}
      </div>`,
  );
}

// -- Top users --------------------------------------------------------------------------

function topUsersSection(): TemplateResult {
  return section(
    "top-users",
    "Top users",
    html`<p class="muted">The ten users with the highest cost in the last ${reportDays} days.</p>
      ${loaded(byUser, (rows) =>
        scroller(html`<table aria-label="Top users">
          <thead>
            <tr>
              <th scope="col">User</th>
              <th scope="col" class="num">Turns</th>
              <th scope="col" class="num">Tokens</th>
              <th scope="col" class="num">Cost</th>
            </tr>
          </thead>
          <tbody>
            ${rows.length === 0
              ? html`<tr><td colspan="4" class="muted">No spend in this period.</td></tr>`
              : rows.map(
                  (row) => html`<tr>
                    <th scope="row">${userLabel(row.key)}</th>
                    <td class="num">${count(row.turns)}</td>
                    <td class="num">${count(tokens(row))}</td>
                    <td class="num">${money(row.cost)}</td>
                  </tr>`,
                )}
          </tbody>
        </table>`),
      )}`,
  );
}

// -- Users: tier and disabled, through UpdateUser with the user's etag -------------------

type UserChange = { tier?: string; disabled?: boolean };

/**
 * Changes one user. Changes to one user run one after the other, each with the etag of the
 * previous answer, so two quick changes (arrow keys on the tier select) do not collide with
 * ABORTED. `change` sees the user as stored now.
 */
function updateUser(name: string, change: (latest: User) => UserChange): void {
  const run = (updating.get(name) ?? Promise.resolve()).then(() => applyUpdate(name, change));
  updating.set(name, run);
  usersError = usersNotice = null;
  invalidate();
  void run.finally(() => {
    if (updating.get(name) === run) updating.delete(name);
    invalidate();
  });
}

async function applyUpdate(name: string, change: (latest: User) => UserChange): Promise<void> {
  const user = users.state === "ready" ? users.value.find((candidate) => candidate.name === name) : undefined;
  if (!user) return;
  const values = change(user);
  try {
    const reply = await session.updateUser({
      user: { name, etag: user.etag, ...values },
      updateMask: { paths: Object.keys(values) },
    });
    replaceUser(reply.user ?? user);
    usersNotice = `${user.email}: saved.`;
  } catch (error) {
    if (isCode(error, Code.PermissionDenied)) denied = true;
    usersError = `${user.email}: ${describe(error)}`;
    // ABORTED: the user changed meanwhile (stale etag); show what is stored now.
    if (isCode(error, Code.Aborted)) await reloadUser(user);
  }
}

function replaceUser(next: User): void {
  if (users.state !== "ready") return;
  users = { state: "ready", value: users.value.map((user) => (user.name === next.name ? next : user)) };
}

async function reloadUser(user: User): Promise<void> {
  const reply = await session.listUsers({ pageSize: 1, emailPrefix: user.email });
  const fresh = reply.users.find((candidate) => candidate.name === user.name);
  if (fresh) replaceUser(fresh);
  invalidate();
}

function tierSelect(user: User, tiers: string[]): TemplateResult {
  const change = (event: Event) => {
    const tier = (event.currentTarget as HTMLSelectElement).value;
    updateUser(user.name, () => ({ tier }));
  };
  // While a change is on its way the select keeps what was chosen; after, what is stored.
  const shown = updating.has(user.name) ? noChange : live(user.tier);
  return html`<select aria-label="Tier" aria-busy=${updating.has(user.name)} .value=${shown} @change=${change}>
    ${tiers.map((tier) => html`<option value=${tier} ?selected=${tier === user.tier}>${tier}</option>`)}
  </select>`;
}

function userRow(user: User, tiers: string[]): TemplateResult {
  const self = user.name === currentUser()?.name;
  return html`<tr>
    <th scope="row" class="wrap">${user.email}</th>
    <td class="wrap">${user.displayName}</td>
    <td>${user.role === Role.ADMIN ? "Admin" : "User"}</td>
    <td>${tierSelect(user, tiers)}</td>
    <td>${user.emailVerified ? "Yes" : "No"}</td>
    <td>${user.disabled ? html`<span class="tag warn">Disabled</span>` : html`<span class="tag">Active</span>`}</td>
    <td>
      <button
        type="button"
        class=${user.disabled ? "" : "danger"}
        ?disabled=${self}
        title=${self ? "You cannot disable yourself" : ""}
        @click=${() => updateUser(user.name, (latest) => ({ disabled: !latest.disabled }))}
      >
        ${user.disabled ? "Enable" : "Disable"}
      </button>
    </td>
  </tr>`;
}

function filterUsers(event: Event): void {
  event.preventDefault();
  const form = event.currentTarget as HTMLFormElement;
  emailPrefix = String(new FormData(form).get("emailPrefix") ?? "").trim();
  users = idle;
  void loadUsers(false);
}

function usersTable(list: User[]): TemplateResult {
  const tiers = [...new Set([...KNOWN_TIERS, ...list.map((user) => user.tier).filter(Boolean)])];
  return html`${scroller(html`<table aria-label="Users">
      <thead>
        <tr>
          <th scope="col">Email</th>
          <th scope="col">Name</th>
          <th scope="col">Role</th>
          <th scope="col">Tier</th>
          <th scope="col">Verified</th>
          <th scope="col">State</th>
          <th scope="col"><span class="sr-only">Actions</span></th>
        </tr>
      </thead>
      <tbody>
        ${list.map((user) => userRow(user, tiers))}
      </tbody>
    </table>`)}
    ${list.length === 0 ? html`<p class="muted">No users match.</p>` : nothing}
    ${usersNext ? html`<button type="button" @click=${() => loadUsers(true)}>Load more</button>` : nothing}`;
}

function usersSection(): TemplateResult {
  return section(
    "users",
    "Users",
    html`<form class="row-form" role="search" aria-label="Filter users" @submit=${filterUsers}>
        <label class="inline"
          >Email starts with <input name="emailPrefix" type="search" .value=${emailPrefix} autocomplete="off"
        /></label>
        <button type="submit">Filter</button>
      </form>
      ${errorLine(usersError)} ${usersNotice ? html`<p class="notice" role="status">${usersNotice}</p>` : nothing}
      ${loaded(users, usersTable)}`,
  );
}

// -- Budgets: read and set a tier's or a user's monthly limits ----------------------------

/** Currency units as typed ("12", "12.5", "0.000001") to exact micro-units; "" is no limit. */
export function decimalToMicros(text: string): bigint | null {
  const trimmed = text.trim();
  if (!trimmed) return null;
  const parts = /^(\d+)(?:\.(\d{0,6}))?$/.exec(trimmed);
  if (!parts) throw new Error(`“${trimmed}” is not an amount: use digits, and at most six after the point.`);
  return BigInt(parts[1]!) * 1_000_000n + BigInt((parts[2] ?? "").padEnd(6, "0"));
}

/**
 * The budget's resource name from what was typed: a budget name, `tiers/{tier}`,
 * `users/{user}`, a user's email, or a bare known tier.
 */
async function budgetName(target: string): Promise<string> {
  const text = target.trim().replace(/\/budget$/, "");
  if (!text) throw new Error("Name a tier (tiers/free) or a user (users/{id} or an email).");
  if (text.includes("@")) {
    const reply = await session.listUsers({ pageSize: 10, emailPrefix: text.toLowerCase() });
    const user = reply.users.find((candidate) => candidate.email === text.toLowerCase());
    if (!user) throw new Error(`No user has the email ${text}.`);
    return `${user.name}/budget`;
  }
  if (text.startsWith("tiers/") || text.startsWith("users/")) return `${text}/budget`;
  if (KNOWN_TIERS.includes(text)) return `tiers/${text}/budget`;
  return `users/${text}/budget`;
}

function limitText(value: Money | undefined): string {
  return value ? microsToDecimal(value.micros) : "";
}

async function withBudget(action: () => Promise<void>): Promise<void> {
  budgetBusy = true;
  budgetError = budgetNotice = null;
  invalidate();
  try {
    await action();
  } catch (error) {
    if (isCode(error, Code.PermissionDenied)) denied = true;
    budgetError = describe(error);
  } finally {
    budgetBusy = false;
    invalidate();
  }
}

async function readBudget(name: string): Promise<GetBudgetResponse> {
  const reply = await ledger.getBudget({ name });
  budget = { state: "ready", value: reply };
  softText = limitText(reply.budget?.softLimit);
  hardText = limitText(reply.budget?.hardLimit);
  return reply;
}

function loadBudget(): Promise<void> {
  return withBudget(async () => {
    await readBudget(await budgetName(budgetTarget));
  });
}

function saveBudget(event: Event): Promise<void> {
  event.preventDefault();
  return withBudget(async () => {
    const soft = decimalToMicros(softText);
    const hard = decimalToMicros(hardText);
    if (soft !== null && hard !== null && soft > hard) throw new Error("The soft limit must not be above the hard limit.");
    const name = await budgetName(budgetTarget);
    // The etag of the budget the admin is looking at, so a change made meanwhile fails
    // (ABORTED) instead of being overwritten; the currency is the ledger's own.
    const shown = budget.state === "ready" && budget.value.budget?.name === name ? budget.value : await ledger.getBudget({ name });
    const currencyCode = shown.spent?.currencyCode ?? "";
    await ledger.setBudget({
      budget: {
        name,
        etag: shown.budget?.etag ?? "",
        softLimit: soft === null ? undefined : { currencyCode, micros: soft },
        hardLimit: hard === null ? undefined : { currencyCode, micros: hard },
      },
    });
    await readBudget(name);
    budgetNotice = soft === null && hard === null ? `Removed the budget of ${name}.` : `Saved the budget of ${name}.`;
  });
}

const BUDGET_STATES: Record<BudgetState, string> = {
  [BudgetState.UNSPECIFIED]: "Unknown",
  [BudgetState.OK]: "Within budget",
  [BudgetState.WARNING]: "Past the soft limit",
  [BudgetState.EXHAUSTED]: "Hard limit reached",
};

function budgetDetails(reply: GetBudgetResponse): TemplateResult {
  return html`<dl class="stats">
    <div><dt>Budget</dt><dd>${reply.budget?.name}</dd></div>
    <div><dt>State</dt><dd>${BUDGET_STATES[reply.state]}</dd></div>
    <div><dt>Spent this month</dt><dd>${money(reply.spent)}</dd></div>
    <div><dt>Reserved</dt><dd>${money(reply.reserved)}</dd></div>
    <div><dt>Soft limit</dt><dd>${money(reply.budget?.softLimit) || "None"}</dd></div>
    <div><dt>Hard limit</dt><dd>${money(reply.budget?.hardLimit) || "None"}</dd></div>
    <div><dt>Changed</dt><dd>${when(reply.budget?.updateTime) || "Never"}</dd></div>
  </dl>`;
}

function currencyHint(): string {
  const code = overview.state === "ready" ? overview.value.cost?.currencyCode : "";
  return `In ${code || "the ledger's currency"}, for example 25.50; empty for no limit.`;
}

function budgetsSection(): TemplateResult {
  const typed = (set: (text: string) => void) => (event: Event) => set((event.currentTarget as HTMLInputElement).value);
  return section(
    "budgets",
    "Budgets",
    html`<p class="muted">Monthly limits (calendar months, UTC) of a tier (all its users together) or of one user.</p>
      <form class="stack" aria-labelledby="admin-budgets-title" @submit=${saveBudget}>
        <label
          >Budget for
          <input
            name="target"
            required
            autocomplete="off"
            aria-describedby="budget-for-hint"
            .value=${budgetTarget}
            @input=${typed((text) => (budgetTarget = text))}
        /></label>
        <p class="muted hint" id="budget-for-hint">tiers/free, users/{id} or a user's email.</p>
        <button type="button" ?disabled=${budgetBusy} @click=${loadBudget}>Load budget</button>
        <label
          >Soft limit
          <input
            name="soft"
            inputmode="decimal"
            autocomplete="off"
            aria-describedby="budget-limit-hint"
            .value=${softText}
            @input=${typed((text) => (softText = text))}
        /></label>
        <label
          >Hard limit
          <input
            name="hard"
            inputmode="decimal"
            autocomplete="off"
            aria-describedby="budget-limit-hint"
            .value=${hardText}
            @input=${typed((text) => (hardText = text))}
        /></label>
        <p class="muted hint" id="budget-limit-hint">${currencyHint()}</p>
        ${errorLine(budgetError)} ${budgetNotice ? html`<p class="notice" role="status">${budgetNotice}</p>` : nothing}
        <button type="submit" class="primary" ?disabled=${budgetBusy}>Save budget</button>
      </form>
      ${budget.state === "ready" ? budgetDetails(budget.value) : nothing}`,
  );
}

// -- System health: every part probed now (GetSystemHealth), then the models' turns ---------

const STATES: Record<HealthState, [string, string]> = {
  [HealthState.UNSPECIFIED]: ["Unknown", "tag"],
  [HealthState.HEALTHY]: ["Healthy", "tag ok"],
  [HealthState.DEGRADED]: ["Degraded", "tag warn"],
  [HealthState.UNHEALTHY]: ["Unhealthy", "tag warn"],
  [HealthState.UNKNOWN]: ["Unknown", "tag"],
};

const GROUPS: [ComponentKind, string][] = [
  [ComponentKind.SERVICE, "Services"],
  [ComponentKind.EDGE_CLUSTER, "Edge clusters"],
  [ComponentKind.MODEL, "Models"],
  [ComponentKind.SEARCH_INDEX, "Search index"],
];

function lagText(component: ComponentHealth): string {
  const lag = component.indexLag;
  if (!lag) return "–";
  const age = lag.oldestEventAge ? `, oldest ${Number(lag.oldestEventAge.seconds).toLocaleString()} s` : "";
  return `${count(lag.backlogEvents)} events${age}`;
}

function componentTable(title: string, components: ComponentHealth[], index: boolean): TemplateResult {
  return scroller(html`<table aria-label=${title}>
    <thead>
      <tr>
        <th scope="col">${title === "Models" ? "Model" : "Name"}</th>
        <th scope="col">State</th>
        ${index ? html`<th scope="col" class="num">Backlog</th>` : nothing}
        <th scope="col">Detail</th>
      </tr>
    </thead>
    <tbody>
      ${components.map((component) => {
        const [text, kind] = STATES[component.state];
        return html`<tr>
          <th scope="row">${component.kind === ComponentKind.MODEL ? lastId(component.name) : component.name}</th>
          <td><span class=${kind}>${text}</span></td>
          ${index ? html`<td class="num">${lagText(component)}</td>` : nothing}
          <td>${component.detail || "–"}</td>
        </tr>`;
      })}
    </tbody>
  </table>`);
}

function componentsBody(value: GetSystemHealthResponse): TemplateResult {
  const checked = value.checkTime ? when(value.checkTime) : "–";
  return html`<p class="muted" role="status">Checked ${checked}.</p>
    ${GROUPS.map(([kind, title]) => {
      const found = value.components.filter((component) => component.kind === kind);
      if (found.length === 0) return nothing;
      return html`<h4>${title}</h4>
        ${componentTable(title, found, kind === ComponentKind.SEARCH_INDEX)}`;
    })}`;
}

function componentsPanel(): TemplateResult {
  const busy = healthChecking;
  return html`<div class="section-head">
      <h3>Components</h3>
      <button type="button" ?disabled=${busy} @click=${loadSystemHealth}>${busy ? "Checking…" : "Refresh"}</button>
    </div>
    ${loaded(systemHealth, componentsBody)}`;
}

// -- model readiness (the router's view) and the overview's window ---------------------------

const READINESS: Record<Readiness, [string, string]> = {
  [Readiness.UNSPECIFIED]: ["Unknown", "tag"],
  [Readiness.READY]: ["Ready", "tag ok"],
  [Readiness.DEGRADED]: ["Degraded", "tag warn"],
  [Readiness.UNAVAILABLE]: ["Unavailable", "tag warn"],
};

function percent(part: bigint, whole: bigint): string {
  if (whole === 0n) return "–";
  return `${((Number(part) / Number(whole)) * 100).toFixed(1)}%`;
}

function modelHealthRows(value: GetAdminOverviewResponse): TemplateResult[] {
  const catalog = models.state === "ready" ? models.value : [];
  // Every model of the catalog, and any the window saw that the catalog no longer has.
  const names = [...new Set([...catalog.map((model) => model.name), ...value.models.map((model) => model.model)])];
  return names.map((name) => {
    const seen = value.models.find((model) => model.model === name);
    const listed = catalog.find((model) => model.name === name);
    const [text, kind] = listed ? READINESS[listed.health] : ["Not in the catalog", "tag"];
    return html`<tr>
      <th scope="row">${listed?.displayName || lastId(name)}</th>
      <td><span class=${kind}>${text}</span></td>
      <td class="num">${count(seen?.turns ?? 0n)}</td>
      <td class="num">${count(seen?.failedTurns ?? 0n)}</td>
      <td class="num">${count(seen?.cancelledTurns ?? 0n)}</td>
      <td class="num">${percent(seen?.failedTurns ?? 0n, seen?.turns ?? 0n)}</td>
      <td class="num">${count(seen?.outputTokens ?? 0n)}</td>
      <td class="num">${money(seen?.cost) || "–"}</td>
    </tr>`;
  });
}

function modelHealthTable(value: GetAdminOverviewResponse): TemplateResult {
  return scroller(html`<table aria-label="Model health">
    <thead>
      <tr>
        <th scope="col">Model</th>
        <th scope="col">Readiness</th>
        <th scope="col" class="num">Turns</th>
        <th scope="col" class="num">Failed</th>
        <th scope="col" class="num">Cancelled</th>
        <th scope="col" class="num">Failure rate</th>
        <th scope="col" class="num">Output tokens</th>
        <th scope="col" class="num">Cost</th>
      </tr>
    </thead>
    <tbody>
      ${modelHealthRows(value)}
    </tbody>
  </table>`);
}

function minuteLabel(minute: GetAdminOverviewResponse["turnsPerMinute"][number]): string {
  if (!minute.minute) return "";
  return new Date(Number(minute.minute.seconds) * 1000).toLocaleTimeString(undefined, { timeStyle: "short" });
}

function turnsPerMinute(value: GetAdminOverviewResponse): TemplateResult {
  const minutes = value.turnsPerMinute;
  if (minutes.length === 0) return html`<p class="muted">No turns per minute reported.</p>`;
  return barChart(
    "chart-turns-per-minute",
    "Turns per minute, last hour",
    { labels: minutes.map(minuteLabel), values: minutes.map((m) => Number(m.turns)), unit: "turns" },
    numbersTable(
      "Turns per minute, last hour",
      ["Minute", "Turns"],
      minutes.map((m) => [minuteLabel(m), count(m.turns)]),
    ),
  );
}

function healthBody(value: GetAdminOverviewResponse): TemplateResult {
  const failed = percent(value.failedTurns, value.turns);
  const last = value.turnsPerMinute.at(-1);
  return html`<dl class="stats">
      <div><dt>Turns, last 24 hours</dt><dd>${count(value.turns)}</dd></div>
      <div><dt>Failed</dt><dd>${count(value.failedTurns)} (${failed})</dd></div>
      <div><dt>Cancelled</dt><dd>${count(value.cancelledTurns)} (${percent(value.cancelledTurns, value.turns)})</dd></div>
      <div><dt>Turns in the last minute</dt><dd>${last ? count(last.turns) : "–"}</dd></div>
    </dl>
    <h3>Models</h3>
    <p class="muted">Readiness as the chat router last saw each model's backends; the numbers are the last 24 hours.</p>
    ${models.state === "error" ? errorLine(`Readiness unavailable: ${models.message}`) : nothing}
    ${modelHealthTable(value)}
    <div class="charts">${turnsPerMinute(value)}</div>`;
}

function healthSection(): TemplateResult {
  return section("health", "System health", html`${componentsPanel()} ${loaded(overview, healthBody)}`);
}

// -- the page ------------------------------------------------------------------------------

/** /admin/{section} scrolls to that section once, after it is drawn. */
function scrollToSection(location: Location): void {
  const wanted = location.path.split("/")[2] ?? "";
  if (!wanted || scrolledTo === location.path) return;
  scrolledTo = location.path;
  queueMicrotask(() => document.getElementById(`admin-${wanted}`)?.scrollIntoView());
}

function body(location: Location): TemplateResult {
  if (!currentUser()) return html`<h1>Admin</h1><p class="muted" role="status">Loading…</p>`;
  if (!isAdmin() || denied) return html`<h1>Admin</h1><p>Admins only.</p>`;
  if (overview.state === "idle") loadAll();
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
