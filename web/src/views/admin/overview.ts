// Overview: numbers of the last 24 hours, and charts of the report period. The period's
// reports (by day, by model, by user) are loaded here; Top users shows the last of them.
import { timestampFromDate, type Timestamp } from "@bufbuild/protobuf/wkt";
import { html, type TemplateResult } from "lit-html";
import { ledger } from "../../api.js";
import { lastId, microsToDecimal, money } from "../../format.js";
import { SpendDimension, type GetAdminOverviewResponse, type SpendRow } from "../../gen/parley/ledger/v1/ledger_pb.js";
import { barChart, microsToUnits } from "../charts.js";
import { loaded } from "../page.js";
import { count, numbersTable, section } from "./layout.js";
import { DAY_MS, fetchInto, state } from "./state.js";

const REPORT_DAYS = [7, 30, 90];

function reportRange(): { startTime: Timestamp } {
  return { startTime: timestampFromDate(new Date(Date.now() - state.reportDays * DAY_MS)) };
}

async function report(dimension: SpendDimension, pageSize: number): Promise<SpendRow[]> {
  return (await ledger.getSpendReport({ dimension, pageSize, ...reportRange() })).rows;
}

export function loadReports(): void {
  void fetchInto(() => report(SpendDimension.DAY, 1000), (load) => (state.byDay = load));
  void fetchInto(() => report(SpendDimension.MODEL, 1000), (load) => (state.byModel = load));
  void fetchInto(() => report(SpendDimension.USER, 10), (load) => (state.byUser = load));
}

function chooseDays(event: Event): void {
  state.reportDays = Number((event.currentTarget as HTMLSelectElement).value);
  loadReports();
}

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
  for (let t = Date.now() - state.reportDays * DAY_MS; t <= Date.now() + DAY_MS / 2; t += DAY_MS) {
    const day = new Date(t).toISOString().slice(0, 10);
    if (days.at(-1)?.day !== day) days.push({ day, micros: byKey.get(day)?.cost?.micros ?? 0n, currency });
  }
  return days;
}

function currencyOf(rows: SpendRow[]): string {
  const overview = state.overview;
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

export function overviewSection(): TemplateResult {
  return section(
    "overview",
    "Overview",
    html`<h3>Last 24 hours</h3>
      ${loaded(state.overview, overviewStats)}
      <div class="section-head">
        <h3>Spend</h3>
        <label class="inline"
          >Report period
          <select @change=${chooseDays}>
            ${REPORT_DAYS.map(
              (days) => html`<option value=${days} ?selected=${days === state.reportDays}>Last ${days} days</option>`,
            )}
          </select>
        </label>
      </div>
      <div class="charts">
        ${loaded(state.byDay, costByDay)}
        ${loaded(state.byModel, (rows) => html`${costByModel(rows)} ${turnsByModel(rows)}`)}
      </div>`,
  );
}
