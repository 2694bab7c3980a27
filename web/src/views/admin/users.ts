// Users: a filtered, paged list of users; tier and disabled are changed through UpdateUser
// with the user's etag.
import { Code } from "@connectrpc/connect";
import { html, noChange, nothing, type TemplateResult } from "lit-html";
import { live } from "lit-html/directives/live.js";
import { describe, isCode, session } from "../../api.js";
import { currentUser } from "../../auth.js";
import { Role, type User } from "../../gen/parley/session/v1/session_pb.js";
import { idle, invalidate } from "../../store.js";
import { errorLine, loaded } from "../page.js";
import { scroller, section } from "./layout.js";
import { fetchInto, KNOWN_TIERS, state } from "./state.js";

export async function loadUsers(more: boolean): Promise<void> {
  const pageToken = more ? state.usersNext : "";
  const before = more && state.users.state === "ready" ? state.users.value : [];
  await fetchInto(
    async () => {
      const reply = await session.listUsers({ pageSize: 50, pageToken, emailPrefix: state.emailPrefix });
      state.usersNext = reply.nextPageToken;
      return [...before, ...reply.users];
    },
    // "Load more" keeps the rows on screen while the next page loads.
    (load) => (state.users = load.state === "loading" && more ? state.users : load),
  );
}

type UserChange = { tier?: string; disabled?: boolean };

/**
 * Changes one user. Changes to one user run one after the other, each with the etag of the
 * previous answer, so two quick changes (arrow keys on the tier select) do not collide with
 * ABORTED. `change` sees the user as stored now.
 */
function updateUser(name: string, change: (latest: User) => UserChange): void {
  const updating = state.updating;
  const run = (updating.get(name) ?? Promise.resolve()).then(() => applyUpdate(name, change));
  updating.set(name, run);
  state.usersError = state.usersNotice = null;
  invalidate();
  void run.finally(() => {
    if (updating.get(name) === run) updating.delete(name);
    invalidate();
  });
}

async function applyUpdate(name: string, change: (latest: User) => UserChange): Promise<void> {
  const users = state.users;
  const user = users.state === "ready" ? users.value.find((candidate) => candidate.name === name) : undefined;
  if (!user) return;
  const values = change(user);
  try {
    const reply = await session.updateUser({
      user: { name, etag: user.etag, ...values },
      updateMask: { paths: Object.keys(values) },
    });
    replaceUser(reply.user ?? user);
    state.usersNotice = `${user.email}: saved.`;
  } catch (error) {
    if (isCode(error, Code.PermissionDenied)) state.denied = true;
    state.usersError = `${user.email}: ${describe(error)}`;
    // ABORTED: the user changed meanwhile (stale etag); show what is stored now.
    if (isCode(error, Code.Aborted)) await reloadUser(user);
  }
}

function replaceUser(next: User): void {
  const users = state.users;
  if (users.state !== "ready") return;
  state.users = { state: "ready", value: users.value.map((user) => (user.name === next.name ? next : user)) };
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
  const shown = state.updating.has(user.name) ? noChange : live(user.tier);
  return html`<select aria-label="Tier" aria-busy=${state.updating.has(user.name)} .value=${shown} @change=${change}>
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
  state.emailPrefix = String(new FormData(form).get("emailPrefix") ?? "").trim();
  state.users = idle;
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
    ${state.usersNext ? html`<button type="button" @click=${() => loadUsers(true)}>Load more</button>` : nothing}`;
}

export function usersSection(): TemplateResult {
  const { usersError, usersNotice } = state;
  return section(
    "users",
    "Users",
    html`<form class="row-form" role="search" aria-label="Filter users" @submit=${filterUsers}>
        <label class="inline"
          >Email starts with <input name="emailPrefix" type="search" .value=${state.emailPrefix} autocomplete="off"
        /></label>
        <button type="submit">Filter</button>
      </form>
      ${errorLine(usersError)} ${usersNotice ? html`<p class="notice" role="status">${usersNotice}</p>` : nothing}
      ${loaded(state.users, usersTable)}`,
  );
}
