// The admin page's state for one visit, in one place: every section reads and writes it here,
// and onPage() forgets it on leaving. fetchInto() runs an admin call for this visit.
import { Code } from "@connectrpc/connect";
import { describe, isCode } from "../../api.js";
import type { Model } from "../../gen/parley/chat/v1/chat_pb.js";
import type {
  GetAdminOverviewResponse,
  GetBudgetResponse,
  GetSystemHealthResponse,
  SpendRow,
} from "../../gen/parley/ledger/v1/ledger_pb.js";
import type { User } from "../../gen/parley/session/v1/session_pb.js";
import { idle, invalidate, type Load } from "../../store.js";

/**
 * The tiers svc_session knows by default (its settings' tiers). No API lists them, so the
 * select offers these plus any tier a listed user has; the server rejects an unknown one.
 */
export const KNOWN_TIERS = ["free", "pro", "enterprise"];
export const DAY_MS = 24 * 3600 * 1000;

interface AdminState {
  /** An admin call answered PERMISSION_DENIED: the page says "Admins only." */
  denied: boolean;
  /** Days back from now that the spend reports cover; kept across visits. */
  reportDays: number;
  overview: Load<GetAdminOverviewResponse>;
  byDay: Load<SpendRow[]>;
  byModel: Load<SpendRow[]>;
  byUser: Load<SpendRow[]>;
  models: Load<Model[]>;
  systemHealth: Load<GetSystemHealthResponse>;
  /** GetSystemHealth is running (the last answer stays on screen meanwhile). */
  healthChecking: boolean;
  users: Load<User[]>;
  usersNext: string;
  /** The Users filter; kept across visits. */
  emailPrefix: string;
  usersError: string | null;
  usersNotice: string | null;
  /** Users with an UpdateUser in flight; their controls wait. */
  readonly updating: Map<string, Promise<void>>;
  /** What the budget form holds; kept across visits. */
  budgetTarget: string;
  softText: string;
  hardText: string;
  budget: Load<GetBudgetResponse>;
  budgetError: string | null;
  budgetNotice: string | null;
  budgetBusy: boolean;
  /** The section of /admin/{section} already scrolled to, so re-renders do not scroll again. */
  scrolledTo: string;
}

export const state: AdminState = {
  denied: false,
  reportDays: 30,
  overview: idle,
  byDay: idle,
  byModel: idle,
  byUser: idle,
  models: idle,
  systemHealth: idle,
  healthChecking: false,
  users: idle,
  usersNext: "",
  emailPrefix: "",
  usersError: null,
  usersNotice: null,
  updating: new Map(),
  budgetTarget: "tiers/free",
  softText: "",
  hardText: "",
  budget: idle,
  budgetError: null,
  budgetNotice: null,
  budgetBusy: false,
  scrolledTo: "",
};

/** Counts visits, so that an answer to an earlier visit is dropped. */
let visit = 0;

/** The page's `ref` callback: called with no element when the page leaves the screen. */
export function onPage(element: Element | undefined): void {
  if (element) return;
  visit++;
  state.denied = false;
  state.overview = state.byDay = state.byModel = state.byUser = state.models = state.users = state.budget = idle;
  state.systemHealth = idle;
  state.healthChecking = false;
  state.usersNext = "";
  state.usersError = state.usersNotice = state.budgetError = state.budgetNotice = null;
  state.updating.clear();
  state.scrolledTo = "";
}

/**
 * Runs an admin call for this visit and stores what it answered; PERMISSION_DENIED turns the
 * whole page into "Admins only.". An answer to an earlier visit is dropped.
 */
export async function fetchInto<T>(call: () => Promise<T>, set: (load: Load<T>) => void): Promise<void> {
  const mine = visit;
  set({ state: "loading" });
  try {
    const value = await call();
    if (mine === visit) set({ state: "ready", value });
  } catch (error) {
    if (mine !== visit) return;
    if (isCode(error, Code.PermissionDenied)) state.denied = true;
    set({ state: "error", message: describe(error) });
  } finally {
    invalidate();
  }
}
