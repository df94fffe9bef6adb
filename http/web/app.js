// mart's storefront and admin console: a client of the public REST API only.
// Routes live in the fragment (#/product/…), so every API path stays as it is.
// Session (tokens) in sessionStorage, the cart in localStorage.
"use strict";

const $main = () => document.getElementById("main");

// ---------- DOM ----------

/** An element with attributes (on* are listeners) and children (strings are text). */
function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === false || value === null || value === undefined) continue;
    if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else if (key === "text") node.textContent = value;
    else node.setAttribute(key, value === true ? "" : value);
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

/**
 * Replaces the page's content and moves focus to its heading, unless the
 * user has moved on from `here` (the page's URL when it began) meanwhile.
 */
function show(here, title, ...content) {
  if (here !== location.hash) return;
  const main = $main();
  main.replaceChildren(el("h1", { tabindex: "-1" }, title), ...content);
  document.title = `${title} · mart`;
  main.querySelector("h1").focus();
}

let fieldCount = 0;

/** A labelled control; `name` is the API field it stands for (errors land next to it). */
function field(label, control, name) {
  const id = control.id || `f${++fieldCount}`;
  control.id = id;
  if (name) control.dataset.field = name;
  const error = el("p", { class: "field-error", id: `${id}-error`, hidden: true });
  control.setAttribute("aria-describedby", error.id);
  return el("label", { for: id }, label, control, error);
}

// ---------- Money and time ----------

const digitsOf = (currency) => {
  try {
    return new Intl.NumberFormat("en", { style: "currency", currency: currency.toUpperCase() })
      .resolvedOptions().maximumFractionDigits;
  } catch {
    return 2;
  }
};

/** Minor units in the currency's own decimals (JPY has none). */
function money(amount, currency) {
  const digits = digitsOf(currency);
  try {
    return new Intl.NumberFormat(undefined, { style: "currency", currency: currency.toUpperCase() })
      .format(amount / 10 ** digits);
  } catch {
    return `${(amount / 10 ** digits).toFixed(digits)} ${currency.toUpperCase()}`;
  }
}

/** "12.50" in `currency` → minor units, or null. */
function toMinor(text, currency) {
  const digits = digitsOf(currency);
  const match = String(text).trim().match(/^(\d+)(?:\.(\d*))?$/);
  if (!match || (match[2] || "").length > digits) return null;
  return Number(match[1]) * 10 ** digits + Number((match[2] || "").padEnd(digits, "0") || 0);
}

/** A UTC time from the API, in the browser's zone. */
const when = (iso) => (iso ? new Date(iso).toLocaleString() : "");

// ---------- Session and API ----------

const session = {
  get() {
    try { return JSON.parse(sessionStorage.getItem("mart.session")) || null; } catch { return null; }
  },
  set(value) {
    if (value) sessionStorage.setItem("mart.session", JSON.stringify(value));
    else sessionStorage.removeItem("mart.session");
    updateNav();
  },
};

class Problem extends Error {
  constructor(status, body) {
    super(body.detail || body.title || `HTTP ${status}`);
    this.status = status;
    this.body = body;
  }
}

async function tokenRequest(form) {
  const response = await fetch("/token", {
    method: "POST",
    headers: { "content-type": "application/x-www-form-urlencoded" },
    body: new URLSearchParams(form),
  });
  const body = await response.json().catch(() => ({}));
  if (!response.ok) throw new Problem(response.status, body);
  return body;
}

/** Trades the refresh token for new tokens; false if the session is over. */
async function refresh() {
  const current = session.get();
  if (!current || !current.refresh) return false;
  try {
    const grant = await tokenRequest({ grant_type: "refresh_token", refresh_token: current.refresh });
    session.set({ ...current, access: grant.access_token, refresh: grant.refresh_token || current.refresh });
    return true;
  } catch {
    session.set(null);
    return false;
  }
}

/**
 * Calls the API as the session's user (or with `token`); a problem document
 * is thrown as a Problem.
 */
async function api(method, path, { body, key, token, retried } = {}) {
  const headers = { accept: "application/json" };
  const current = token ? null : session.get();
  if (token || current) headers.authorization = `Bearer ${token || current.access}`;
  if (body !== undefined) headers["content-type"] = "application/json";
  if (key) headers["idempotency-key"] = key;
  const response = await fetch(path, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  if (response.status === 401 && current && !retried && (await refresh())) {
    return api(method, path, { body, key, retried: true });
  }
  if (response.status === 204) return null;
  const data = await response.json().catch(() => ({}));
  if (!response.ok) throw new Problem(response.status, data);
  return data;
}

/** Shows a problem at the top of `form` and each field's messages next to it. */
function showProblem(form, error) {
  form.querySelectorAll(".field-error").forEach((p) => { p.hidden = true; p.textContent = ""; });
  form.querySelectorAll("[aria-invalid]").forEach((c) => c.removeAttribute("aria-invalid"));
  let banner = form.querySelector(".problem");
  if (!banner) {
    banner = el("div", { class: "problem", role: "alert" });
    form.prepend(banner);
  }
  const body = error instanceof Problem ? error.body : {};
  banner.textContent = error instanceof Problem ? error.message : "The shop cannot be reached; try again.";
  for (const [name, messages] of Object.entries(body.errors || {})) {
    const control = form.querySelector(`[data-field="${CSS.escape(name)}"]`);
    const text = `${name.replace(/^items\[\d+\]\./, "")} ${messages.join("; ")}`;
    if (control) {
      control.setAttribute("aria-invalid", "true");
      const slot = document.getElementById(`${control.id}-error`);
      slot.textContent = text;
      slot.hidden = false;
    } else {
      banner.append(el("br"), text);
    }
  }
  banner.focus?.();
}

function clearProblem(form) {
  form.querySelector(".problem")?.remove();
  form.querySelectorAll(".field-error").forEach((p) => { p.hidden = true; });
}

// ---------- Cart ----------

const cart = {
  lines() {
    try { return JSON.parse(localStorage.getItem("mart.cart")) || []; } catch { return []; }
  },
  save(lines) {
    localStorage.setItem("mart.cart", JSON.stringify(lines));
    // A changed cart is a new order: a new Idempotency-Key.
    sessionStorage.removeItem("mart.order-key");
    updateNav();
  },
  add(product, quantity) {
    const lines = cart.lines();
    const line = lines.find((l) => l.product_id === product.id);
    if (line) line.quantity += quantity;
    else lines.push({ product_id: product.id, name: product.name, price: product.price, currency: product.currency, quantity });
    cart.save(lines);
  },
  /** The key of the order this cart becomes: the same for every click until it changes. */
  key() {
    let key = sessionStorage.getItem("mart.order-key");
    if (!key) {
      key = crypto.randomUUID();
      sessionStorage.setItem("mart.order-key", key);
    }
    return key;
  },
};

// ---------- Navigation ----------

function updateNav() {
  const current = session.get();
  const admin = current && current.role === "admin";
  document.querySelectorAll("[data-when]").forEach((node) => {
    const rule = node.dataset.when;
    node.hidden = rule === "signed-in" ? !current : rule === "signed-out" ? !!current : !admin;
  });
  const count = cart.lines().reduce((n, l) => n + l.quantity, 0);
  const link = document.getElementById("nav-cart");
  if (link) link.textContent = count ? `Cart (${count})` : "Cart";
}

let leaving = [];
/** Runs when the page changes (stops polling). */
const onLeave = (fn) => leaving.push(fn);

const routes = [
  [/^\/$/, catalogPage],
  [/^\/product\/([^/]+)$/, productPage],
  [/^\/cart$/, cartPage],
  [/^\/login$/, loginPage],
  [/^\/register$/, registerPage],
  [/^\/orders$/, ordersPage],
  [/^\/orders\/([^/]+)$/, orderPage],
  [/^\/notifications$/, notificationsPage],
  [/^\/admin\/products$/, adminProducts],
  [/^\/admin\/stock$/, adminStock],
  [/^\/admin\/orders$/, adminOrders],
  [/^\/admin\/notifications$/, adminNotifications],
  [/^\/admin\/cluster$/, adminCluster],
];

async function route() {
  leaving.forEach((fn) => fn());
  leaving = [];
  const [path, query] = (location.hash.replace(/^#/, "") || "/").split("?");
  const params = new URLSearchParams(query || "");
  for (const [pattern, page] of routes) {
    const match = path.match(pattern);
    if (match) {
      try {
        await page(location.hash, ...match.slice(1).map(decodeURIComponent), params);
      } catch (error) {
        if (error instanceof Problem && error.status === 401) {
          session.set(null);
          location.hash = `#/login?next=${encodeURIComponent(path)}`;
          return;
        }
        const box = el("div", {});
        show(location.hash, "Something went wrong", box);
        showProblem(box, error);
      }
      return;
    }
  }
  show(location.hash, "Not found", el("p", {}, "No such page. ", el("a", { href: "#/" }, "Back to the catalog")));
}

/** Pages that need a signed-in user send others to sign in first. */
function needSession(next) {
  if (session.get()) return true;
  location.hash = `#/login?next=${encodeURIComponent(next)}`;
  return false;
}

// ---------- Shopper ----------

const AVAILABILITY = { in_stock: "In stock", sold_out: "Sold out", unknown: "Not available" };
const availabilityText = (a) =>
  !a ? "" : a.status === "low" ? `Only ${a.left} left` : AVAILABILITY[a.status] || a.status;

async function availabilityOf(ids) {
  if (!ids.length) return {};
  const list = await api("GET", `/availability?ids=${ids.join(",")}`);
  return Object.fromEntries(list.map((a) => [a.product_id, a]));
}

async function catalogPage(here, params) {
  const q = params.get("q") || "";
  const sort = params.get("sort") || "created_at";
  const search = el("input", { type: "search", name: "q", value: q });
  const order = el("select", { name: "sort" },
    [["created_at", "Newest"], ["price", "Price: low to high"], ["-price", "Price: high to low"], ["name", "Name"]]
      .map(([value, label]) => el("option", { value, selected: value === sort }, label)));
  const form = el("form", { class: "inline", role: "search", onsubmit: (e) => {
    e.preventDefault();
    const next = new URLSearchParams();
    if (search.value.trim()) next.set("q", search.value.trim());
    if (order.value !== "created_at") next.set("sort", order.value);
    location.hash = `#/?${next}`;
  } }, field("Search", search, "q"), field("Sort by", order, "sort"), el("button", { type: "submit" }, "Search"));
  const list = el("ul", { class: "cards", "aria-label": "Products" });
  const more = el("button", { type: "button", class: "secondary", hidden: true }, "More products");
  show(here, q ? `Results for “${q}”` : "Catalog", form, list, more);
  let cursor = null;
  const load = async () => {
    more.disabled = true;
    const query = new URLSearchParams({ limit: "12", sort });
    if (q) query.set("q", q);
    if (cursor) query.set("cursor", cursor);
    try {
      const page = await api("GET", `/products?${query}`);
      const stock = await availabilityOf(page.items.map((p) => p.id));
      for (const p of page.items) {
        const a = stock[p.id];
        list.append(el("li", { class: "card" },
          el("h2", {}, el("a", { href: `#/product/${p.id}` }, p.name)),
          el("p", { class: "price" }, money(p.price, p.currency)),
          el("p", { class: `stock-${a ? a.status : "unknown"}` }, availabilityText(a))));
      }
      if (!list.children.length) list.replaceWith(el("p", {}, "Nothing found."));
      cursor = page.next_cursor;
      more.hidden = !cursor;
    } catch (error) {
      showProblem(form, error);
    }
    more.disabled = false;
  };
  more.addEventListener("click", load);
  await load();
}

async function productPage(here, id) {
  const product = await api("GET", `/products/${id}`);
  const a = (await availabilityOf([product.id]))[product.id];
  const buyable = a && (a.status === "in_stock" || a.status === "low");
  const quantity = el("input", { type: "number", name: "quantity", min: "1", max: String(a && a.left ? a.left : 1000), value: "1", inputmode: "numeric" });
  const added = el("p", { class: "notice", role: "status", hidden: true });
  const form = el("form", { class: "inline", onsubmit: (e) => {
    e.preventDefault();
    const n = Number(quantity.value);
    if (!Number.isInteger(n) || n < 1) {
      showProblem(form, new Problem(422, { detail: "How many?", errors: { quantity: ["must be a whole number, at least 1"] } }));
      return;
    }
    clearProblem(form);
    cart.add(product, n);
    added.hidden = false;
    added.replaceChildren(`Added ${n} × ${product.name} to your cart. `, el("a", { href: "#/cart" }, "Go to cart"));
  } }, field("Quantity", quantity, "quantity"),
  el("button", { type: "submit", disabled: !buyable, id: "add-to-cart" }, buyable ? "Add to cart" : "Sold out"));
  show(here, product.name,
    el("p", { class: "price" }, money(product.price, product.currency)),
    el("p", { class: `stock-${a ? a.status : "unknown"}`, id: "availability" }, availabilityText(a)),
    el("p", {}, product.description || ""),
    form, added);
}

function cartPage(here) {
  const lines = cart.lines();
  if (!lines.length) {
    show(here, "Your cart", el("p", {}, "Your cart is empty. ", el("a", { href: "#/" }, "Browse the catalog")));
    return;
  }
  const form = el("form", {});
  const rows = lines.map((line, i) => {
    const quantity = el("input", { type: "number", min: "1", max: "1000", value: String(line.quantity), inputmode: "numeric" });
    quantity.addEventListener("change", () => {
      const n = Number(quantity.value);
      if (Number.isInteger(n) && n >= 1) {
        const all = cart.lines();
        all[i].quantity = n;
        cart.save(all);
        route();
      }
    });
    const product = el("span", { "data-field": `items[${i}].product_id`, id: `line-${i}` });
    return el("tr", {},
      el("td", {}, el("a", { href: `#/product/${line.product_id}` }, line.name),
        el("p", { class: "field-error", id: `line-${i}-error`, hidden: true }), product),
      el("td", {}, field(`Quantity of ${line.name}`, quantity, `items[${i}].quantity`)),
      el("td", {}, money(line.price * line.quantity, line.currency)),
      el("td", {}, el("button", { type: "button", class: "secondary", "aria-label": `Remove ${line.name}`,
        onclick: () => { cart.save(cart.lines().filter((_, j) => j !== i)); route(); } }, "Remove")));
  });
  const totals = {};
  for (const l of lines) totals[l.currency] = (totals[l.currency] || 0) + l.price * l.quantity;
  const place = el("button", { type: "submit", id: "place-order" }, "Place order");
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    if (!needSession("/cart")) return;
    // However often it is clicked, one request, with one key: one order.
    if (place.disabled) return;
    place.disabled = true;
    place.textContent = "Placing…";
    try {
      const items = cart.lines().map((l) => ({ product_id: l.product_id, quantity: l.quantity }));
      const order = await api("POST", "/orders", { body: { items }, key: cart.key() });
      localStorage.removeItem("mart.cart");
      sessionStorage.removeItem("mart.order-key");
      updateNav();
      location.hash = `#/orders/${order.id}`;
    } catch (error) {
      showProblem(form, error);
      place.disabled = false;
      place.textContent = "Place order";
    }
  });
  form.append(
    el("div", { class: "table-wrap" }, el("table", {},
      el("thead", {}, el("tr", {}, el("th", {}, "Product"), el("th", {}, "Quantity"), el("th", {}, "Amount"), el("th", {}, el("span", { class: "skip" }, "Remove")))),
      el("tbody", {}, rows))),
    el("p", { class: "price" }, "Total: ", Object.entries(totals).map(([c, t]) => money(t, c)).join(" + ")),
    place);
  show(here, "Your cart", form);
}

async function signIn(username, password) {
  const grant = await tokenRequest({ grant_type: "password", username, password });
  const me = await api("GET", "/user_profile", { token: grant.access_token });
  // One step: the page never shows a session whose role is not known yet.
  session.set({ access: grant.access_token, refresh: grant.refresh_token || null, username: me.username, role: me.role });
}

function loginPage(here, params) {
  const next = params.get("next") || "/";
  const username = el("input", { name: "username", autocomplete: "username", required: true });
  const password = el("input", { name: "password", type: "password", autocomplete: "current-password", required: true });
  const form = el("form", { onsubmit: async (e) => {
    e.preventDefault();
    try {
      await signIn(username.value, password.value);
      location.hash = `#${next}`;
    } catch (error) {
      showProblem(form, error);
    }
  } }, field("Username", username, "username"), field("Password", password, "password"),
  el("p", {}, el("button", { type: "submit" }, "Sign in")),
  el("p", {}, "New here? ", el("a", { href: `#/register?next=${encodeURIComponent(next)}` }, "Create an account")));
  show(here, "Sign in", form);
}

function registerPage(here, params) {
  const next = params.get("next") || "/";
  const username = el("input", { name: "username", autocomplete: "username", required: true });
  const email = el("input", { name: "email", type: "email", autocomplete: "email", required: true });
  const password = el("input", { name: "password", type: "password", autocomplete: "new-password", required: true });
  const form = el("form", { onsubmit: async (e) => {
    e.preventDefault();
    try {
      await api("POST", "/register", { body: { username: username.value, email: email.value, password: password.value } });
      await signIn(username.value, password.value);
      location.hash = `#${next}`;
    } catch (error) {
      showProblem(form, error);
    }
  } }, field("Username", username, "username"), field("Email", email, "email"),
  field("Password", password, "password"), el("p", {}, el("button", { type: "submit" }, "Create account")));
  show(here, "Create an account", form);
}

const STATUS = {
  awaiting_payment: "Awaiting payment", paid: "Paid", shipped: "Shipped",
  delivered: "Delivered", cancelled: "Cancelled", expired: "Expired",
};

function ordersTable(orders, actions) {
  if (!orders.length) return el("p", {}, "No orders.");
  return el("div", { class: "table-wrap" }, el("table", {},
    el("thead", {}, el("tr", {}, ["Order", "Placed", "Status", "Total", actions ? "Actions" : null].filter(Boolean).map((h) => el("th", {}, h)))),
    el("tbody", {}, orders.map((o) => el("tr", {},
      el("td", {}, el("a", { href: `#/orders/${o.id}` }, o.id.slice(0, 8))),
      el("td", {}, when(o.created_at)),
      el("td", { class: "status" }, STATUS[o.status] || o.status),
      el("td", {}, money(o.total, o.currency)),
      actions ? el("td", {}, actions(o)) : null)))));
}

async function ordersPage(here) {
  if (!needSession("/orders")) return;
  const page = await api("GET", "/my-orders?limit=50");
  show(here, "My orders", ordersTable(page.items));
}

async function orderPage(here, id) {
  if (!needSession(`/orders/${id}`)) return;
  const render = async () => {
    const order = await api("GET", `/orders/${id}`);
    const actions = el("form", { class: "inline" });
    if (order.status === "awaiting_payment") {
      actions.append(
        el("button", { type: "button", id: "pay", onclick: async (e) => {
          e.target.disabled = true;
          try {
            const payment = await api("POST", "/payments", { body: { order_id: order.id }, key: `pay-${order.id}` });
            location.assign(payment.checkout_url);
          } catch (error) {
            showProblem(actions, error);
            e.target.disabled = false;
          }
        } }, "Pay"),
        el("button", { type: "button", class: "secondary", id: "cancel", onclick: async (e) => {
          e.target.disabled = true;
          try {
            await api("PATCH", `/orders/${order.id}`, { body: { status: "cancelled" } });
            await render();
          } catch (error) {
            showProblem(actions, error);
          }
        } }, "Cancel order"));
    }
    show(here, `Order ${order.id.slice(0, 8)}`,
      el("dl", {},
        el("dt", {}, "Status"), el("dd", { class: "status", id: "order-status" }, STATUS[order.status] || order.status),
        order.status === "awaiting_payment" ? [el("dt", {}, "Pay by"), el("dd", {}, when(order.expires_at))] : null,
        el("dt", {}, "Placed"), el("dd", {}, when(order.created_at)),
        el("dt", {}, "Total"), el("dd", { class: "price" }, money(order.total, order.currency))),
      el("div", { class: "table-wrap" }, el("table", {},
        el("thead", {}, el("tr", {}, el("th", {}, "Product"), el("th", {}, "Quantity"), el("th", {}, "Price"), el("th", {}, "Amount"))),
        el("tbody", {}, order.items.map((l) => el("tr", {},
          el("td", {}, l.name), el("td", {}, String(l.quantity)),
          el("td", {}, money(l.unit_price, order.currency)), el("td", {}, money(l.line_total, order.currency))))))),
      actions);
    return order.status;
  };
  let status = await render();
  // Live status: the payment (or an admin's shipping) shows without a reload.
  const timer = setInterval(async () => {
    if (document.activeElement && document.activeElement.closest("form")) return;
    try {
      const order = await api("GET", `/orders/${id}`);
      if (order.status !== status) status = await render();
    } catch { /* the next tick tries again */ }
  }, 2000);
  onLeave(() => clearInterval(timer));
}

async function notificationsPage(here) {
  if (!needSession("/notifications")) return;
  const page = await api("GET", "/my-notifications?limit=50");
  show(here, "Notifications", notificationsTable(page.items));
}

function notificationsTable(items) {
  if (!items.length) return el("p", {}, "Nothing yet.");
  return el("div", { class: "table-wrap" }, el("table", {},
    el("thead", {}, el("tr", {}, ["When", "Subject", "To", "Status"].map((h) => el("th", {}, h)))),
    el("tbody", {}, items.map((n) => el("tr", {},
      el("td", {}, when(n.created_at)), el("td", {}, n.subject), el("td", {}, n.recipient),
      el("td", {}, n.status + (n.last_error ? ` (${n.last_error})` : "")))))));
}

// ---------- Admin ----------

function adminShell(here, title, ...content) {
  const tabs = el("nav", { "aria-label": "Admin" },
    [["products", "Products"], ["stock", "Stock"], ["orders", "Orders"], ["notifications", "Notifications"], ["cluster", "Cluster"]]
      .map(([path, label]) => el("a", { href: `#/admin/${path}`, "aria-current": location.hash.startsWith(`#/admin/${path}`) ? "page" : false }, label)));
  show(here, title, tabs, ...content);
}

function needAdmin(here, next) {
  if (!needSession(next)) return false;
  if (session.get().role === "admin") return true;
  show(here, "Admins only", el("p", {}, "This console is for the shop's admins."));
  return false;
}

async function adminProducts(here) {
  if (!needAdmin(here, "/admin/products")) return;
  const name = el("input", { name: "name", required: true });
  const description = el("input", { name: "description" });
  const price = el("input", { name: "price", inputmode: "decimal", placeholder: "12.50", required: true });
  const currency = el("input", { name: "currency", value: "usd", maxlength: "3", size: "4" });
  const stock = el("input", { name: "stock", type: "number", min: "0", value: "0" });
  const create = el("form", { class: "inline", "aria-label": "New product", onsubmit: async (e) => {
    e.preventDefault();
    const minor = toMinor(price.value, currency.value || "usd");
    if (minor === null) {
      showProblem(create, new Problem(422, { detail: "Check the price.", errors: { price: [`must be an amount with at most ${digitsOf(currency.value || "usd")} decimals`] } }));
      return;
    }
    try {
      await api("POST", "/products", { body: { name: name.value, description: description.value, price: minor, currency: currency.value || "usd", stock: Number(stock.value || 0) } });
      await route();
    } catch (error) {
      showProblem(create, error);
    }
  } }, field("Name", name, "name"), field("Description", description, "description"),
  field("Price", price, "price"), field("Currency", currency, "currency"), field("Stock", stock, "stock"),
  el("button", { type: "submit" }, "Create product"));
  const page = await api("GET", "/products?limit=100&sort=name");
  const rows = page.items.map((p) => {
    const rename = el("input", { value: p.name });
    const reprice = el("input", { value: (p.price / 10 ** digitsOf(p.currency)).toFixed(digitsOf(p.currency)), inputmode: "decimal" });
    const form = el("form", { class: "inline", onsubmit: async (e) => {
      e.preventDefault();
      const minor = toMinor(reprice.value, p.currency);
      if (minor === null) {
        showProblem(form, new Problem(422, { detail: "Check the price.", errors: { price: ["is not an amount"] } }));
        return;
      }
      try {
        await api("PATCH", `/products/${p.id}`, { body: { name: rename.value, price: minor } });
        await route();
      } catch (error) {
        showProblem(form, error);
      }
    } }, field(`Name of ${p.name}`, rename, "name"), field(`Price of ${p.name} (${p.currency.toUpperCase()})`, reprice, "price"),
    el("button", { type: "submit" }, "Save"),
    el("button", { type: "button", class: "secondary", onclick: async () => {
      if (!confirm(`Archive ${p.name}? Shoppers will no longer see it.`)) return;
      try {
        await api("DELETE", `/products/${p.id}`);
        await route();
      } catch (error) {
        showProblem(form, error);
      }
    } }, "Archive"),
    el("a", { href: `#/admin/stock?product=${p.id}` }, "Stock"));
    return el("li", { class: "card" }, form);
  });
  adminShell(here, "Products", el("h2", {}, "New product"), create, el("h2", {}, "Catalog"), el("ul", { class: "cards" }, rows));
}

async function adminStock(here, params) {
  if (!needAdmin(here, "/admin/stock")) return;
  const products = (await api("GET", "/products?limit=100&sort=name")).items;
  const chosen = params.get("product") || (products[0] && products[0].id);
  const picker = el("select", { name: "product", onchange: () => { location.hash = `#/admin/stock?product=${picker.value}`; } },
    products.map((p) => el("option", { value: p.id, selected: p.id === chosen }, p.name)));
  if (!chosen) {
    adminShell(here, "Stock", el("p", {}, "No products yet."));
    return;
  }
  let levels = null;
  try { levels = await api("GET", `/inventory/${chosen}`); } catch (error) { if (!(error instanceof Problem) || error.status !== 404) throw error; }
  const adjust = el("input", { name: "adjust", type: "number", required: true, inputmode: "numeric" });
  const reason = el("input", { name: "reason", required: true, placeholder: "delivery, breakage, count…" });
  const form = el("form", { class: "inline", onsubmit: async (e) => {
    e.preventDefault();
    try {
      await api("PATCH", `/inventory/${chosen}`, { body: { adjust: Number(adjust.value), reason: reason.value } });
      await route();
    } catch (error) {
      showProblem(form, error);
    }
  } }, field("Add (or remove, negative)", adjust, "adjust"), field("Reason", reason, "reason"),
  el("button", { type: "submit" }, "Adjust stock"));
  adminShell(here, "Stock", el("form", { class: "inline" }, field("Product", picker, "product")),
    levels ? el("dl", {},
      el("dt", {}, "On hand"), el("dd", { id: "on-hand" }, String(levels.on_hand)),
      el("dt", {}, "Reserved"), el("dd", {}, String(levels.reserved)),
      el("dt", {}, "Available"), el("dd", {}, String(levels.available))) : el("p", {}, "No stock record yet."),
    form);
}

async function adminOrders(here, params) {
  if (!needAdmin(here, "/admin/orders")) return;
  const status = params.get("status") || "paid";
  const picker = el("select", { name: "status", onchange: () => { location.hash = `#/admin/orders?status=${picker.value}`; } },
    Object.entries(STATUS).map(([value, label]) => el("option", { value, selected: value === status }, label)));
  const page = await api("GET", `/orders?status=${status}&limit=100`);
  const box = el("div", {});
  const move = (order, to, label) => el("button", { type: "button", "data-order": order.id, onclick: async (e) => {
    e.target.disabled = true;
    try {
      await api("PATCH", `/orders/${order.id}`, { body: { status: to } });
      await route();
    } catch (error) {
      showProblem(box, error);
      e.target.disabled = false;
    }
  } }, label);
  box.append(ordersTable(page.items, (o) =>
    o.status === "paid" ? move(o, "shipped", "Ship") : o.status === "shipped" ? move(o, "delivered", "Deliver") : ""));
  adminShell(here, "Orders", el("form", { class: "inline" }, field("Status", picker, "status")), box);
}

async function adminNotifications(here) {
  if (!needAdmin(here, "/admin/notifications")) return;
  const page = await api("GET", "/notifications?limit=100");
  adminShell(here, "Notification log", notificationsTable(page.items));
}

async function adminCluster(here) {
  if (!needAdmin(here, "/admin/cluster")) return;
  const view = await api("GET", "/cluster");
  const nodes = Array.isArray(view.nodes) ? view.nodes : [];
  adminShell(here, "Cluster",
    nodes.length ? el("div", { class: "table-wrap" }, el("table", {},
      el("thead", {}, el("tr", {}, ["Node", "Services", "Details"].map((h) => el("th", {}, h)))),
      el("tbody", {}, nodes.map((n) => el("tr", {},
        el("td", {}, n.name || n.node || ""),
        el("td", {}, (n.services || n.hosts || []).join(", ")),
        el("td", {}, el("code", {}, JSON.stringify(Object.fromEntries(Object.entries(n).filter(([k]) => !["name", "node", "services", "hosts"].includes(k)))))))))))
      : null,
    ownerLookup(),
    el("h2", {}, "As reported"), el("pre", { class: "table-wrap" }, JSON.stringify(view, null, 2)));
}

/** Which node owns an entity now: a product's stock, an open order. */
function ownerLookup() {
  const service = el("select", { name: "service" },
    [["inventory", "Stock of a product"], ["orders", "An open order"]].map(([value, label]) => el("option", { value }, label)));
  const id = el("input", { name: "id", required: true, placeholder: "id" });
  const answer = el("p", { role: "status" });
  const form = el("form", { class: "inline", "aria-label": "Who owns", onsubmit: async (e) => {
    e.preventDefault();
    try {
      const owner = await api("GET", `/cluster/owners/${service.value}/${encodeURIComponent(id.value.trim())}`);
      clearProblem(form);
      answer.textContent = JSON.stringify(owner);
    } catch (error) {
      showProblem(form, error);
    }
  } }, field("Entity", service, "service"), field("Id", id, "id"), el("button", { type: "submit" }, "Find owner"));
  return el("section", {}, el("h2", {}, "Who owns"), form, answer);
}

// ---------- Start ----------

document.addEventListener("DOMContentLoaded", () => {
  document.getElementById("sign-out").addEventListener("click", async () => {
    const current = session.get();
    try { await api("POST", "/logout", { body: { refresh_token: current && current.refresh } }); } catch { /* signed out here anyway */ }
    session.set(null);
    location.hash = "#/";
  });
  updateNav();
  window.addEventListener("hashchange", route);
  route();
});
