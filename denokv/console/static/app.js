// The console's entry point: sign-in, then the data browser or the health page by URL hash.
import * as api from "./api.js";
import { h, replace } from "./dom.js";
import { showBrowser } from "./browse.js";
import { showHealth } from "./health.js";

const main = document.getElementById("main");
const state = { about: null, view: null };

function stopView() {
  if (state.view && state.view.stop) state.view.stop();
  state.view = null;
}

function showSignIn(message) {
  stopView();
  state.about = null;
  document.getElementById("sign-out").hidden = true;
  document.getElementById("role").textContent = "";
  const input = h("input", {
    type: "password", id: "token", name: "token", autocomplete: "current-password",
    placeholder: "access token", required: true,
  });
  const error = h("p", { id: "sign-in-error", class: "error", role: "alert" }, message || "");
  const form = h("form", { id: "sign-in", class: "card narrow" },
    h("h1", {}, "Sign in"),
    h("p", { class: "muted" }, "Use the server's access token (DENO_KV_ACCESS_TOKEN)."),
    input, h("button", { type: "submit", id: "sign-in-button" }, "Sign in"), error);
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    error.textContent = "";
    try {
      const about = await api.post("login", { token: input.value });
      input.value = "";
      signedIn(about);
    } catch (err) {
      error.textContent = err.message;
    }
  });
  replace(main, form);
  input.focus();
}

function signedIn(about) {
  state.about = about;
  api.setCsrf(about.csrf);
  document.getElementById("sign-out").hidden = false;
  const writes = about.writable ? `writes ${about.writes}` : "console read-only";
  document.getElementById("role").textContent = `${about.role} · ${writes}`;
  route();
}

function route() {
  if (!state.about) return;
  stopView();
  const [path, query] = (location.hash.slice(1) || "/browse").split("?");
  const params = new URLSearchParams(query || "");
  for (const link of document.querySelectorAll("nav a")) {
    link.classList.toggle("active", link.getAttribute("href") === `#${path}`);
  }
  state.view = path === "/health"
    ? showHealth(main)
    : showBrowser(main, state.about, params);
}

api.onSignedOut((message) => showSignIn(message));
window.addEventListener("hashchange", route);
document.getElementById("sign-out").addEventListener("click", async () => {
  await api.post("logout", {}).catch(() => {});
  showSignIn("Signed out.");
});

api.get("session").then(signedIn, (err) => {
  if (err.status !== 401) replace(main, h("p", { class: "error" }, err.message));
});
