// Budgets: read and set a tier's or a user's monthly limits.
import { Code } from "@connectrpc/connect";
import { html, nothing, type TemplateResult } from "lit-html";
import { describe, isCode, ledger, session } from "../../api.js";
import { microsToDecimal, money, when } from "../../format.js";
import type { Money } from "../../gen/parley/common/v1/common_pb.js";
import { BudgetState, type GetBudgetResponse } from "../../gen/parley/ledger/v1/ledger_pb.js";
import { invalidate } from "../../store.js";
import { errorLine } from "../page.js";
import { section } from "./layout.js";
import { KNOWN_TIERS, state } from "./state.js";

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
  state.budgetBusy = true;
  state.budgetError = state.budgetNotice = null;
  invalidate();
  try {
    await action();
  } catch (error) {
    if (isCode(error, Code.PermissionDenied)) state.denied = true;
    state.budgetError = describe(error);
  } finally {
    state.budgetBusy = false;
    invalidate();
  }
}

async function readBudget(name: string): Promise<GetBudgetResponse> {
  const reply = await ledger.getBudget({ name });
  state.budget = { state: "ready", value: reply };
  state.softText = limitText(reply.budget?.softLimit);
  state.hardText = limitText(reply.budget?.hardLimit);
  return reply;
}

function loadBudget(): Promise<void> {
  return withBudget(async () => {
    await readBudget(await budgetName(state.budgetTarget));
  });
}

function saveBudget(event: Event): Promise<void> {
  event.preventDefault();
  return withBudget(async () => {
    const soft = decimalToMicros(state.softText);
    const hard = decimalToMicros(state.hardText);
    if (soft !== null && hard !== null && soft > hard) throw new Error("The soft limit must not be above the hard limit.");
    const name = await budgetName(state.budgetTarget);
    // The etag of the budget the admin is looking at, so a change made meanwhile fails
    // (ABORTED) instead of being overwritten; the currency is the ledger's own.
    const budget = state.budget;
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
    state.budgetNotice = soft === null && hard === null ? `Removed the budget of ${name}.` : `Saved the budget of ${name}.`;
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
  const overview = state.overview;
  const code = overview.state === "ready" ? overview.value.cost?.currencyCode : "";
  return `In ${code || "the ledger's currency"}, for example 25.50; empty for no limit.`;
}

export function budgetsSection(): TemplateResult {
  const typed = (set: (text: string) => void) => (event: Event) => set((event.currentTarget as HTMLInputElement).value);
  const { budget, budgetBusy, budgetError, budgetNotice } = state;
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
            .value=${state.budgetTarget}
            @input=${typed((text) => (state.budgetTarget = text))}
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
            .value=${state.softText}
            @input=${typed((text) => (state.softText = text))}
        /></label>
        <label
          >Hard limit
          <input
            name="hard"
            inputmode="decimal"
            autocomplete="off"
            aria-describedby="budget-limit-hint"
            .value=${state.hardText}
            @input=${typed((text) => (state.hardText = text))}
        /></label>
        <p class="muted hint" id="budget-limit-hint">${currencyHint()}</p>
        ${errorLine(budgetError)} ${budgetNotice ? html`<p class="notice" role="status">${budgetNotice}</p>` : nothing}
        <button type="submit" class="primary" ?disabled=${budgetBusy}>Save budget</button>
      </form>
      ${budget.state === "ready" ? budgetDetails(budget.value) : nothing}`,
  );
}
