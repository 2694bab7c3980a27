// System health: every part probed now (GetSystemHealth), then the models' readiness (the
// router's view) and turns in the overview's window.
import { html, nothing, type TemplateResult } from "lit-html";
import { ledger } from "../../api.js";
import { lastId, money, when } from "../../format.js";
import { ModelHealth as Readiness } from "../../gen/parley/chat/v1/chat_pb.js";
import {
  ComponentKind,
  HealthState,
  type ComponentHealth,
  type GetAdminOverviewResponse,
  type GetSystemHealthResponse,
} from "../../gen/parley/ledger/v1/ledger_pb.js";
import { barChart } from "../charts.js";
import { errorLine, loaded } from "../page.js";
import { count, numbersTable, scroller, section } from "./layout.js";
import { fetchInto, state } from "./state.js";

export function loadSystemHealth(): void {
  if (state.healthChecking) return;
  state.healthChecking = true;
  void fetchInto(
    async () => {
      try {
        return await ledger.getSystemHealth({});
      } finally {
        state.healthChecking = false;
      }
    },
    // "Refresh" keeps the last answer on screen while the probes run again.
    (load) =>
      (state.systemHealth = load.state === "loading" && state.systemHealth.state === "ready" ? state.systemHealth : load),
  );
}

// -- components --------------------------------------------------------------------------

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
  const busy = state.healthChecking;
  return html`<div class="section-head">
      <h3>Components</h3>
      <button type="button" ?disabled=${busy} @click=${loadSystemHealth}>${busy ? "Checking…" : "Refresh"}</button>
    </div>
    ${loaded(state.systemHealth, componentsBody)}`;
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
  const catalog = state.models.state === "ready" ? state.models.value : [];
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
  const models = state.models;
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

export function healthSection(): TemplateResult {
  return section("health", "System health", html`${componentsPanel()} ${loaded(state.overview, healthBody)}`);
}
