// payguard dashboard entry point: sign-in, the session, and which view to show.
// The token is held in memory only (ui.js `state.token`); see docs/dashboard.md.

import { buildAdminView, stopAdminView } from "/static/admin.js";
import {
  $, ApiError, api, hideBanner, hooks, refresh, showBanner, showError, startTimer, state,
  stopTimer,
} from "/static/ui.js";
import { buildUserView } from "/static/user.js";

// Tokens were kept in localStorage by earlier versions: forget any that is left there.
const LEGACY_TOKEN_KEY = "payguard.token";

function onUnauthorized(err) {
  logout();
  showError(err);
}
hooks.onUnauthorized = onUnauthorized;

/** One call for both roles: `/api/session` answers any valid token, so signing in never
 * produces a 403 (which the browser would log as a console error). */
async function login(token) {
  state.token = token;
  let who;
  try {
    who = await api("GET", "/api/session");
  } catch (err) {
    if (err instanceof ApiError && err.status === 401) onUnauthorized(err);
    else { state.token = null; showError(err); }
    return;
  }
  state.role = who.role === "admin" ? "admin" : "user";
  state.me = who;
  $("login").hidden = true;
  $("session-controls").hidden = false;
  const roleBadge = $("role-badge");
  roleBadge.textContent = state.role;
  roleBadge.className = `role ${state.role}`;
  roleBadge.hidden = false;
  $("who").textContent = state.role === "admin" ? "admin token"
    : who.name ? `${who.name} · ${who.email}` : String(who.email ?? "");
  if (state.role === "admin") buildAdminView();
  else buildUserView();
  startTimer();
}

function logout() {
  stopTimer();
  stopAdminView();
  Object.assign(state, {
    token: null, role: null, me: null, loaders: [], entryCursor: null, entryStack: [],
    currency: null,
  });
  $("view").replaceChildren();
  $("session-controls").hidden = true;
  $("role-badge").hidden = true;
  $("who").textContent = "";
  $("login").hidden = false;
  $("token-input").value = "";
  hideBanner();
}

function readFragmentToken() {
  // "#token=..." signs in once (links for a new user, tests), then leaves the address bar.
  const m = /(?:^#|&)token=([^&]*)/.exec(location.hash);
  if (!m) return null;
  history.replaceState(null, "", location.pathname + location.search);
  try { return decodeURIComponent(m[1]).trim() || null; } catch { return null; }
}

function checkoutReturnNotice() {
  // The payment page sends the buyer back here (a new tab: it has no token).
  const params = new URLSearchParams(location.search);
  const result = params.get("result");
  if (result !== "success" && result !== "cancel") return;
  showBanner(result === "success"
    ? "Payment submitted. Your dashboard tab shows the purchase once the provider confirms it."
    : "Checkout canceled. Nothing was charged.", "ok");
}

function boot() {
  try { localStorage.removeItem(LEGACY_TOKEN_KEY); } catch { /* storage disabled */ }
  $("banner-close").addEventListener("click", hideBanner);
  $("logout").addEventListener("click", logout);
  $("refresh-now").addEventListener("click", () => refresh());
  const toggle = $("refresh-toggle");
  toggle.addEventListener("click", () => {
    state.paused = !state.paused;
    toggle.setAttribute("aria-pressed", String(state.paused));
    toggle.textContent = state.paused ? "Resume auto-refresh" : "Pause auto-refresh";
    toggle.classList.toggle("paused", state.paused);
  });
  $("login-form").addEventListener("submit", (e) => {
    e.preventDefault();
    const token = $("token-input").value.trim();
    if (token) { hideBanner(); login(token); }
  });
  document.addEventListener("visibilitychange", () => {
    if (!document.hidden && !state.paused) refresh();
  });

  const token = readFragmentToken();
  if (token) login(token);
  else {
    $("login").hidden = false;
    checkoutReturnNotice();
  }
}

boot();
