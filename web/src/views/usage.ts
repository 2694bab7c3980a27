// The signed-in user's usage and cost (LedgerService.GetUsage) over a chosen period, per
// model, and where they stand against their monthly budget (GetBudget).
import { timestampFromDate, type Timestamp } from "@bufbuild/protobuf/wkt";
import { html, nothing, type TemplateResult } from "lit-html";
import { ref } from "lit-html/directives/ref.js";
import { describe, ledger } from "../api.js";
import { lastId, money } from "../format.js";
import type { Money } from "../gen/parley/common/v1/common_pb.js";
import { BudgetState, type GetBudgetResponse, type GetUsageResponse } from "../gen/parley/ledger/v1/ledger_pb.js";
import { idle, invalidate, type Load } from "../store.js";
import { loaded } from "./page.js";

type Period = "month" | "last-month" | "30d";

const PERIODS: Array<[Period, string]> = [
  ["month", "This month"],
  ["last-month", "Last month"],
  ["30d", "Last 30 days"],
];

let period: Period = "month";
let usage: Load<GetUsageResponse> = idle;
let budget: Load<GetBudgetResponse> = idle;
let visit = 0;

function onPage(element: Element | undefined): void {
  if (element) return;
  visit++;
  usage = idle;
  budget = idle;
}

/** The period's range in UTC, as the ledger counts months; unset bounds mean its defaults. */
function range(which: Period): { startTime?: Timestamp; endTime?: Timestamp } {
  const now = new Date();
  const monthStart = new Date(Date.UTC(now.getUTCFullYear(), now.getUTCMonth(), 1));
  switch (which) {
    case "month":
      return {}; // the start of the current month (UTC) until now
    case "last-month": {
      const start = new Date(Date.UTC(now.getUTCFullYear(), now.getUTCMonth() - 1, 1));
      return { startTime: timestampFromDate(start), endTime: timestampFromDate(monthStart) };
    }
    case "30d":
      return { startTime: timestampFromDate(new Date(now.getTime() - 30 * 24 * 3600 * 1000)) };
  }
}

async function loadUsage(): Promise<void> {
  const mine = visit;
  usage = { state: "loading" };
  invalidate();
  try {
    const reply = await ledger.getUsage({ name: "users/me", ...range(period) });
    if (mine === visit) usage = { state: "ready", value: reply };
  } catch (error) {
    if (mine === visit) usage = { state: "error", message: describe(error) };
  }
  invalidate();
}

async function loadBudget(): Promise<void> {
  const mine = visit;
  budget = { state: "loading" };
  try {
    const reply = await ledger.getBudget({ name: "users/me/budget" });
    if (mine === visit) budget = { state: "ready", value: reply };
  } catch (error) {
    if (mine === visit) budget = { state: "error", message: describe(error) };
  }
  invalidate();
}

function choosePeriod(event: Event): void {
  period = (event.currentTarget as HTMLSelectElement).value as Period;
  void loadUsage();
}

const count = (value: bigint): string => value.toLocaleString();

function totals(reply: GetUsageResponse): TemplateResult {
  const turns = reply.models.reduce((sum, model) => sum + model.turns, 0n);
  return html`<dl class="stats">
    <div><dt>Cost</dt><dd>${money(reply.cost) || "0.00"}</dd></div>
    <div><dt>Turns</dt><dd>${count(turns)}</dd></div>
    <div><dt>Input tokens</dt><dd>${count(reply.usage?.inputTokens ?? 0n)}</dd></div>
    <div><dt>Output tokens</dt><dd>${count(reply.usage?.outputTokens ?? 0n)}</dd></div>
  </dl>`;
}

function modelTable(reply: GetUsageResponse): TemplateResult {
  if (reply.models.length === 0) return html`<p class="muted">No usage in this period.</p>`;
  return html`<div class="table-scroll">
    <table aria-label="Usage by model">
      <thead>
        <tr>
          <th scope="col">Model</th>
          <th scope="col" class="num">Turns</th>
          <th scope="col" class="num">Input tokens</th>
          <th scope="col" class="num">Output tokens</th>
          <th scope="col" class="num">Cost</th>
        </tr>
      </thead>
      <tbody>
        ${reply.models.map(
          (model) => html`<tr>
            <th scope="row">${lastId(model.model)}</th>
            <td class="num">${count(model.turns)}</td>
            <td class="num">${count(model.usage?.inputTokens ?? 0n)}</td>
            <td class="num">${count(model.usage?.outputTokens ?? 0n)}</td>
            <td class="num">${money(model.cost)}</td>
          </tr>`,
        )}
      </tbody>
    </table>
  </div>`;
}

function usageSection(): TemplateResult {
  return html`<section class="panel" aria-labelledby="usage-title">
    <h2 id="usage-title">Cost and tokens</h2>
    <label class="inline"
      >Period
      <select @change=${choosePeriod}>
        ${PERIODS.map(([value, text]) => html`<option value=${value} ?selected=${value === period}>${text}</option>`)}
      </select>
    </label>
    ${loaded(usage, (reply) => html`${totals(reply)} ${modelTable(reply)}`)}
  </section>`;
}

/** a - b, never below zero, in a's currency. */
function left(limit: Money, ...spent: Array<Money | undefined>): Money {
  const used = spent.reduce((sum, item) => sum + (item?.micros ?? 0n), 0n);
  const micros = limit.micros - used;
  return { ...limit, micros: micros > 0n ? micros : 0n };
}

const STATES: Record<BudgetState, string> = {
  [BudgetState.UNSPECIFIED]: "",
  [BudgetState.OK]: "Within budget",
  [BudgetState.WARNING]: "Past the warning limit",
  [BudgetState.EXHAUSTED]: "Limit reached: new chats are refused until next month",
};

/** Spent against the hard limit as a gauge; <meter> takes numbers, so this is display only. */
function gauge(reply: GetBudgetResponse, hard: Money): TemplateResult {
  const units = (value: Money | undefined) => Number(value?.micros ?? 0n) / 1_000_000;
  const max = units(hard);
  const soft = reply.budget?.softLimit;
  return html`<label for="budget-meter">Spent of your monthly limit</label>
    <meter
      id="budget-meter"
      class="budget-meter"
      min="0"
      max=${max}
      value=${Math.min(units(reply.spent), max)}
      low=${soft ? units(soft) : max * 0.8}
      high=${soft ? units(soft) : max * 0.8}
      optimum="0"
    >
      ${money(reply.spent)} of ${money(hard)}
    </meter>
    <p class="muted">${money(reply.spent)} of ${money(hard)} spent</p>`;
}

function budgetBody(reply: GetBudgetResponse): TemplateResult {
  const hard = reply.budget?.hardLimit;
  const soft = reply.budget?.softLimit;
  return html`${reply.state === BudgetState.UNSPECIFIED
      ? nothing
      : html`<p class=${reply.state === BudgetState.OK ? "notice" : "error"}>${STATES[reply.state]}</p>`}
    <dl class="stats">
      <div>
        <dt>Remaining this month</dt>
        <dd>${hard ? money(left(hard, reply.spent, reply.reserved)) : "No limit"}</dd>
      </div>
      <div><dt>Spent</dt><dd>${money(reply.spent)}</dd></div>
      ${reply.reserved && reply.reserved.micros > 0n
        ? html`<div><dt>Reserved by running chats</dt><dd>${money(reply.reserved)}</dd></div>`
        : nothing}
      <div><dt>Warning limit</dt><dd>${soft ? money(soft) : "None"}</dd></div>
      <div><dt>Monthly limit</dt><dd>${hard ? money(hard) : "None"}</dd></div>
    </dl>
    ${hard && hard.micros > 0n ? gauge(reply, hard) : nothing}
    ${hard
      ? nothing
      : html`<p class="muted">
          Your account has no monthly limit of its own (your tier's may still apply).
        </p>`}`;
}

function budgetSection(): TemplateResult {
  return html`<section class="panel" aria-labelledby="budget-title">
    <h2 id="budget-title">Budget</h2>
    <p class="muted">Budgets count calendar months in UTC.</p>
    ${loaded(budget, budgetBody)}
  </section>`;
}

export function usageView(): TemplateResult {
  if (usage.state === "idle") void loadUsage();
  if (budget.state === "idle") void loadBudget();
  return html`<div class="narrow" ${ref(onPage)}>
    <h1>Usage</h1>
    ${budgetSection()} ${usageSection()}
  </div>`;
}
