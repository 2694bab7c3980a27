// Top users: the ten users with the highest cost in the report period (the Overview's
// period; its report by user is loaded with the others in overview.ts).
import { html, type TemplateResult } from "lit-html";
import { money } from "../../format.js";
import { loaded } from "../page.js";
import { count, scroller, section } from "./layout.js";
import { state } from "./state.js";

const tokens = (row: { usage?: { inputTokens: bigint; outputTokens: bigint } | undefined }): bigint =>
  (row.usage?.inputTokens ?? 0n) + (row.usage?.outputTokens ?? 0n);

/** The users loaded in the Users section, by name, to show emails in place of ids. */
function userLabel(name: string): string {
  const users = state.users;
  if (users.state !== "ready") return name;
  const found = users.value.find((user) => user.name === name);
  return found ? found.email : name;
}

export function topUsersSection(): TemplateResult {
  return section(
    "top-users",
    "Top users",
    html`<p class="muted">The ten users with the highest cost in the last ${state.reportDays} days.</p>
      ${loaded(state.byUser, (rows) =>
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
