/* <notify-inbox>: the embeddable in-app inbox. An application's page needs two lines: a
   script tag loading this file (/static/inbox.js) from the service's origin, and

     <notify-inbox user-id="alice" token="USER_TOKEN"></notify-inbox>

   with the token its backend minted for that user (POST /users/<id>/token).
   Attributes: `user-id`, `token` (may be replaced at any time: the next call uses the new
   one), `api` (the service's origin; default: where this script was loaded from).

   A bell with the unread count; its panel lists the user's in-app notifications with read /
   unread and archive, and "Mark all read". Live through the inbox stream (Server-Sent
   Events): on a drop it asks for a new stream ticket and reopens with the last event id, so
   the server replays what changed meanwhile. Nothing is loaded from elsewhere (styles and the
   bell's SVG are inline), and notification text only ever goes in through textContent. */
(function () {
  "use strict";
  if (!window.customElements || window.customElements.get("notify-inbox")) { return; }

  var SCRIPT = document.currentScript;
  var DEFAULT_API = SCRIPT && SCRIPT.src ? new URL(SCRIPT.src, location.href).origin : location.origin;
  var SVG = "http://www.w3.org/2000/svg";
  var LIST_LIMIT = 20;
  var BACKOFF_FIRST = 1000;
  var BACKOFF_MOST = 30000;
  var STYLE = [
    ":host{position:relative;display:inline-block;font:14px/1.4 system-ui,-apple-system,'Segoe UI',sans-serif;color:var(--notify-inbox-text,#1f2933)}",
    "*{box-sizing:border-box}",
    "button{font:inherit;color:inherit;cursor:pointer}",
    ":focus-visible{outline:3px solid var(--notify-inbox-focus,#2563eb);outline-offset:2px}",
    ".bell{position:relative;display:inline-flex;align-items:center;justify-content:center;width:40px;height:40px;border:1px solid transparent;border-radius:999px;background:transparent}",
    ".bell:hover{background:rgba(127,127,127,.15)}",
    ".bell svg{width:22px;height:22px}",
    ".badge{position:absolute;top:2px;right:0;min-width:18px;height:18px;padding:0 5px;border-radius:9px;background:var(--notify-inbox-accent,#c62828);color:#fff;font-size:11px;font-weight:700;line-height:18px;text-align:center}",
    ".badge[hidden]{display:none}",
    ".panel{position:absolute;right:0;top:calc(100% + 6px);z-index:1000;width:min(380px,calc(100vw - 16px));max-height:min(480px,80vh);display:flex;flex-direction:column;border:1px solid rgba(127,127,127,.35);border-radius:10px;background:var(--notify-inbox-background,#fff);box-shadow:0 10px 30px rgba(0,0,0,.18);overflow:hidden}",
    ".panel[hidden]{display:none}",
    ".head{display:flex;align-items:center;justify-content:space-between;gap:8px;padding:10px 12px;border-bottom:1px solid rgba(127,127,127,.25)}",
    ".head h2{margin:0;font-size:15px}",
    ".link-button{border:0;background:none;padding:4px 6px;border-radius:6px;color:var(--notify-inbox-link,#1d4ed8);text-decoration:underline}",
    ".link-button[disabled]{opacity:.5;cursor:default;text-decoration:none}",
    "ul{list-style:none;margin:0;padding:0;overflow-y:auto}",
    "li{position:relative;padding:10px 12px 10px 26px;border-bottom:1px solid rgba(127,127,127,.18)}",
    "li.unread{background:var(--notify-inbox-unread,rgba(37,99,235,.07))}",
    "li .dot{position:absolute;left:10px;top:16px;width:8px;height:8px;border-radius:50%;background:var(--notify-inbox-accent,#c62828)}",
    "li:not(.unread) .dot{display:none}",
    ".title{display:block;font-weight:600;color:inherit;overflow-wrap:anywhere}",
    "a.title{color:var(--notify-inbox-link,#1d4ed8)}",
    ".message{margin:2px 0 0;overflow-wrap:anywhere;white-space:pre-line}",
    ".meta{display:flex;flex-wrap:wrap;align-items:center;gap:4px 10px;margin-top:6px;font-size:12px;color:var(--notify-inbox-muted,#52606d)}",
    ".meta button{border:1px solid rgba(127,127,127,.4);border-radius:6px;background:transparent;padding:2px 8px;font-size:12px}",
    ".empty,.status{margin:0;padding:16px 12px;color:var(--notify-inbox-muted,#52606d)}",
    ".status{padding:6px 12px;font-size:12px}",
    ".status:empty{display:none}",
    ".visually-hidden{position:absolute;width:1px;height:1px;margin:-1px;padding:0;overflow:hidden;clip:rect(0 0 0 0);white-space:nowrap;border:0}",
    "@media (prefers-color-scheme:dark){:host{color:var(--notify-inbox-text,#e4e7eb)}.panel{background:var(--notify-inbox-background,#1f2428)}a.title,.link-button{color:var(--notify-inbox-link,#93c5fd)}.meta,.empty,.status{color:var(--notify-inbox-muted,#9aa5b1)}}"
  ].join("\n");

  function el(tag, attributes, children) {
    var element = document.createElement(tag);
    Object.keys(attributes || {}).forEach(function (name) { element.setAttribute(name, attributes[name]); });
    (children || []).forEach(function (child) {
      element.appendChild(typeof child === "string" ? document.createTextNode(child) : child);
    });
    return element;
  }

  function bellIcon() {
    var svg = document.createElementNS(SVG, "svg");
    svg.setAttribute("viewBox", "0 0 24 24");
    svg.setAttribute("aria-hidden", "true");
    svg.setAttribute("focusable", "false");
    svg.setAttribute("fill", "none");
    svg.setAttribute("stroke", "currentColor");
    svg.setAttribute("stroke-width", "2");
    svg.setAttribute("stroke-linecap", "round");
    svg.setAttribute("stroke-linejoin", "round");
    ["M6 8a6 6 0 0 1 12 0c0 7 3 9 3 9H3s3-2 3-9", "M10.3 21a1.94 1.94 0 0 0 3.4 0"].forEach(function (d) {
      var path = document.createElementNS(SVG, "path");
      path.setAttribute("d", d);
      svg.appendChild(path);
    });
    return svg;
  }

  // Styles through a constructed sheet: a page whose CSP forbids inline <style> allows these.
  function addStyles(root) {
    if (root.adoptedStyleSheets !== undefined && window.CSSStyleSheet && CSSStyleSheet.prototype.replaceSync) {
      var sheet = new CSSStyleSheet();
      sheet.replaceSync(STYLE);
      root.adoptedStyleSheets = [sheet];
    } else {
      root.appendChild(el("style", {}, [STYLE]));
    }
  }

  // A link only to http(s) (an absolute URL, or a path on the application's own site).
  function safeHref(url) {
    if (typeof url !== "string" || !url) { return null; }
    if (url.charAt(0) === "/" && url.charAt(1) !== "/" && url.charAt(1) !== "\\") { return url; }
    try {
      var parsed = new URL(url);
      return parsed.protocol === "http:" || parsed.protocol === "https:" ? parsed.href : null;
    } catch (error) {
      return null;
    }
  }

  function relativeTime(iso, now) {
    var then = Date.parse(iso);
    if (isNaN(then)) { return ""; }
    var seconds = Math.max(0, Math.round((now - then) / 1000));
    if (seconds < 60) { return "just now"; }
    if (seconds < 3600) { return Math.floor(seconds / 60) + " min ago"; }
    if (seconds < 86400) { return Math.floor(seconds / 3600) + " h ago"; }
    if (seconds < 7 * 86400) { return Math.floor(seconds / 86400) + " d ago"; }
    return new Date(then).toLocaleDateString();
  }

  function newestFirst(a, b) {
    return a.created_at < b.created_at ? 1 : a.created_at > b.created_at ? -1 : 0;
  }

  class NotifyInbox extends HTMLElement {
    static get observedAttributes() { return ["token", "user-id", "api"]; }

    constructor() {
      super();
      this._items = [];           // in_app, not archived, newest first
      this._counts = { total: 0, unread: 0, unseen: 0 };
      this._source = null;        // the one EventSource, or null
      this._opening = false;      // a ticket is being fetched for the next one
      this._generation = 0;       // bumped on stop: late answers of an older run are dropped
      this._lastEventId = "";
      this._backoff = BACKOFF_FIRST;
      this._retryTimer = null;
      this._clockTimer = null;
      this._heldForTest = false;
      this._started = false;
      this._loaded = false;
      this._build();
    }

    // -- the markup (once, in the shadow root) ---------------------------------------------
    _build() {
      var root = this.attachShadow({ mode: "open" });
      addStyles(root);
      this._badge = el("span", { class: "badge", "aria-hidden": "true", hidden: "" }, ["0"]);
      this._bell = el("button", {
        type: "button", class: "bell", part: "bell", "aria-haspopup": "dialog",
        "aria-expanded": "false", "aria-controls": "panel"
      }, [bellIcon(), this._badge]);
      this._markAll = el("button", { type: "button", class: "link-button" }, ["Mark all read"]);
      this._list = el("ul", { "aria-label": "Notifications" });
      this._empty = el("p", { class: "empty" }, ["No notifications yet."]);
      this._status = el("p", { class: "status", role: "status" });
      this._panel = el("div", {
        id: "panel", class: "panel", part: "panel", role: "dialog", "aria-label": "Notifications", tabindex: "-1", hidden: ""
      }, [el("div", { class: "head" }, [el("h2", {}, ["Notifications"]), this._markAll]), this._status, this._empty, this._list]);
      this._live = el("div", { class: "visually-hidden", "aria-live": "polite", "aria-atomic": "true" });
      root.appendChild(this._bell);
      root.appendChild(this._panel);
      root.appendChild(this._live);
      this._renderBadge();

      var self = this;
      this._bell.addEventListener("click", function () { self._setOpen(self._panel.hidden); });
      this._markAll.addEventListener("click", function () { self._readAll(); });
      this._panel.addEventListener("keydown", function (event) { self._onPanelKey(event); });
      this._bell.addEventListener("keydown", function (event) {
        if (event.key === "Escape" && !self._panel.hidden) { self._setOpen(false); }
      });
      this._onOutside = function (event) {
        if (!self._panel.hidden && event.composedPath().indexOf(self) < 0) { self._setOpen(false, true); }
      };
    }

    // -- life cycle --------------------------------------------------------------------------
    connectedCallback() {
      document.addEventListener("click", this._onOutside, true);
      this._start();
    }

    disconnectedCallback() {
      document.removeEventListener("click", this._onOutside, true);
      this._stop();
    }

    attributeChangedCallback(name, before, after) {
      if (before === after || !this.isConnected) { return; }
      if (name === "token") {
        // A refreshed token: calls use it from now on; a stream refused for the old one
        // (waiting out its backoff) is opened again at once.
        if (!this._started) { this._start(); return; }
        if (!this._source && !this._opening) { this._backoff = BACKOFF_FIRST; this._reconnectSoon(0); }
        if (!this._loaded) { this._load(); }
        return;
      }
      this._stop();  // another user or service: start over
      this._start();
    }

    _start() {
      if (!this.userId || !this.token) { return; }
      this._started = true;
      var self = this;
      this._clockTimer = setInterval(function () { if (!self._panel.hidden) { self._renderList(); } }, 60000);
      this._load();
      this._openStream();
    }

    _stop() {
      this._generation += 1;
      this._started = false;
      this._closeStream();
      clearTimeout(this._retryTimer);
      clearInterval(this._clockTimer);
      this._retryTimer = this._clockTimer = null;
      this._opening = false;
      this._items = [];
      this._loaded = false;
      this._lastEventId = "";
    }

    get userId() { return this.getAttribute("user-id") || ""; }
    get token() { return this.getAttribute("token") || ""; }
    get apiBase() { return (this.getAttribute("api") || DEFAULT_API).replace(/\/+$/, ""); }

    // -- the JSON API ------------------------------------------------------------------------
    _call(method, path) {
      return fetch(this.apiBase + path, {
        method: method,
        headers: { Authorization: "Bearer " + this.token, Accept: "application/json" },
        credentials: "omit",  // the token is the credential, never a cookie
        cache: "no-store"
      }).then(function (reply) {
        return reply.json().catch(function () { return {}; }).then(function (body) {
          if (!reply.ok) { throw new Error(body.error || "HTTP " + reply.status); }
          return body;
        });
      });
    }

    _userPath(rest) { return "/users/" + encodeURIComponent(this.userId) + "/notifications" + rest; }

    _load() {
      var self = this;
      var generation = this._generation;
      var list = this._call("GET", this._userPath("?type=in_app&limit=" + LIST_LIMIT));
      var counts = this._call("GET", this._userPath("/counts?type=in_app"));
      return Promise.all([list, counts]).then(function (replies) {
        if (generation !== self._generation) { return; }
        // Snapshots the stream brought meanwhile are as new as the listing's: keep them.
        replies[0].notifications.forEach(function (n) { self._upsert(n, false); });
        self._loaded = true;
        self._counts = replies[1];
        self._setStatus("");
        self._renderBadge();
        self._renderList();
      }).catch(function (error) {
        if (generation === self._generation) { self._setStatus("Notifications could not be loaded (" + error.message + ")."); }
      });
    }

    _act(notification, action) {
      var self = this;
      var path = "/notifications/" + encodeURIComponent(notification.id) + "/" + action;
      return this._call("POST", path).then(function (body) {
        self._upsert(body.notification, false);
        self._renderList();
        if (!self._source) { self._refreshCounts(); }  // else counts.updated will come
      }).catch(function (error) { self._setStatus("That did not work: " + error.message); });
    }

    _readAll() {
      var self = this;
      var now = new Date().toISOString();
      return this._call("POST", this._userPath("/read-all")).then(function () {
        self._items.forEach(function (n) { if (!n.read_at) { n.read_at = now; n.seen_at = n.seen_at || now; } });
        self._renderList();
        if (!self._source) { self._refreshCounts(); }
      }).catch(function (error) { self._setStatus("That did not work: " + error.message); });
    }

    _refreshCounts() {
      var self = this;
      return this._call("GET", this._userPath("/counts?type=in_app")).then(function (counts) {
        self._counts = counts;
        self._renderBadge();
      }).catch(function () { /* the badge keeps its last count; the stream will correct it */ });
    }

    // -- the live stream ---------------------------------------------------------------------
    _openStream() {
      if (this._source || this._opening || this._heldForTest) { return; }  // never two at once
      var self = this;
      var generation = this._generation;
      this._opening = true;
      this._call("POST", this._userPath("/stream-ticket")).then(function (body) {
        self._opening = false;
        if (generation !== self._generation || self._heldForTest) { return; }
        var url = self.apiBase + self._userPath("/stream?ticket=" + encodeURIComponent(body.ticket));
        if (self._lastEventId) { url += "&last_event_id=" + encodeURIComponent(self._lastEventId); }
        self._listen(new EventSource(url));
      }).catch(function () {
        self._opening = false;
        if (generation === self._generation) { self._reconnectSoon(); }
      });
    }

    _listen(source) {
      var self = this;
      this._source = source;
      function take(handler) {
        return function (event) {
          if (source !== self._source) { return; }
          if (event.lastEventId) { self._lastEventId = event.lastEventId; }
          var data;
          try { data = JSON.parse(event.data); } catch (error) { return; }
          handler(data);
        };
      }
      source.addEventListener("open", function () {
        if (source !== self._source) { return; }
        self._backoff = BACKOFF_FIRST;
        if (!self._loaded) { self._load(); }  // the first load failed: the service is back
      });
      source.addEventListener("counts.updated", take(function (counts) {
        self._counts = counts;
        self._renderBadge();
      }));
      source.addEventListener("notification.created", take(function (data) { self._applyLive(data.notification); }));
      source.addEventListener("notification.updated", take(function (data) { self._applyLive(data.notification); }));
      source.addEventListener("error", function () {
        // CONNECTING: EventSource retries by itself, sending Last-Event-ID. CLOSED (a refused
        // ticket, say): a new ticket, after the backoff.
        if (source === self._source && source.readyState === EventSource.CLOSED) {
          self._source = null;
          self._reconnectSoon();
        }
      });
    }

    _closeStream() {
      if (this._source) { this._source.close(); }
      this._source = null;
    }

    _reconnectSoon(delay) {
      var self = this;
      clearTimeout(this._retryTimer);
      var wait = delay === undefined ? this._backoff : delay;
      if (delay === undefined) { this._backoff = Math.min(this._backoff * 2, BACKOFF_MOST); }
      this._retryTimer = setTimeout(function () { self._retryTimer = null; self._openStream(); }, wait);
    }

    // For tests: drop the stream as a lost connection would, and bring it back (a new ticket,
    // `last_event_id` = the last event received).
    _dropStreamForTest() {
      this._heldForTest = true;
      clearTimeout(this._retryTimer);
      this._closeStream();
    }

    _resumeStreamForTest() {
      this._heldForTest = false;
      this._openStream();
    }

    // -- state -------------------------------------------------------------------------------
    _applyLive(n) {
      if (!n || !n.id) { return; }
      var known = this._items.some(function (item) { return item.id === n.id; });
      if (this._upsert(n, true) && !known && !n.read_at) {
        this._announce("New notification: " + (n.title || n.message || ""));
      }
      this._renderList();
    }

    // Put a snapshot in its place (the same one may come twice); True when it is listed.
    _upsert(n, live) {
      if (!n || !n.id || (n.notification_type && n.notification_type !== "in_app")) { return false; }
      var index = -1;
      this._items.forEach(function (item, i) { if (item.id === n.id) { index = i; } });
      if (index >= 0) { this._items.splice(index, 1); }
      if (n.archived_at) { return false; }
      this._items.push(n);
      this._items.sort(newestFirst);
      if (this._items.length > LIST_LIMIT * 2 && live) { this._items.length = LIST_LIMIT * 2; }
      return true;
    }

    // -- rendering ---------------------------------------------------------------------------
    _renderBadge() {
      var unread = Number(this._counts.unread) || 0;
      this._badge.textContent = unread > 99 ? "99+" : String(unread);
      this._badge.hidden = unread === 0;
      this._bell.setAttribute("aria-label", "Notifications, " + (unread ? unread + " unread" : "none unread"));
      this._markAll.disabled = unread === 0;
    }

    _renderList() {
      var focused = this.shadowRoot.activeElement;
      var focusedId = focused && focused.closest && focused.closest("li") ? focused.closest("li").getAttribute("data-id") : null;
      var focusedAction = focused ? focused.getAttribute("data-action") : null;
      var now = Date.now();
      var self = this;
      this._list.textContent = "";
      this._items.forEach(function (n) { self._list.appendChild(self._item(n, now)); });
      this._empty.hidden = this._items.length > 0;
      if (focusedId) {  // keep the keyboard where it was across a re-render (or in the panel)
        var item = this._list.querySelector('li[data-id="' + CSS.escape(focusedId) + '"]');
        var target = item && (focusedAction ? item.querySelector('[data-action="' + focusedAction + '"]') : item);
        (target || this._list.querySelector("li") || this._panel).focus();
      }
    }

    _item(n, now) {
      var self = this;
      var unread = !n.read_at;
      var href = safeHref(n.action_url);
      var heading = n.title || n.message || "";
      var title = href
        ? el("a", { class: "title", href: href, "data-action": "open" }, [heading])
        : el("span", { class: "title" }, [heading]);
      if (href) { title.addEventListener("click", function () { if (unread) { self._act(n, "read"); } }); }
      var time = el("time", { datetime: n.created_at || "", title: n.created_at ? new Date(n.created_at).toLocaleString() : "" }, [relativeTime(n.created_at, now)]);
      var toggle = el("button", { type: "button", "data-action": "toggle" }, [unread ? "Mark read" : "Mark unread"]);
      toggle.setAttribute("aria-label", (unread ? "Mark read: " : "Mark unread: ") + heading);
      toggle.addEventListener("click", function () { self._act(n, unread ? "read" : "unread"); });
      var archive = el("button", { type: "button", "data-action": "archive" }, ["Archive"]);
      archive.setAttribute("aria-label", "Archive: " + heading);
      archive.addEventListener("click", function () { self._act(n, "archive"); });
      var state = el("span", { class: "visually-hidden" }, [unread ? "Unread. " : "Read. "]);
      var children = [el("span", { class: "dot", "aria-hidden": "true" }), state, title];
      if (n.title && n.message) { children.push(el("p", { class: "message" }, [n.message])); }
      children.push(el("div", { class: "meta" }, [time, toggle, archive]));
      return el("li", { class: unread ? "unread" : "read", "data-id": n.id, tabindex: "-1" }, children);
    }

    _setStatus(text) { this._status.textContent = text; }

    _announce(text) {
      var live = this._live;
      live.textContent = "";
      setTimeout(function () { live.textContent = text; }, 50);  // a change, even for the same text
    }

    // -- opening, closing and the keyboard ---------------------------------------------------
    _setOpen(open, leaveFocus) {
      this._panel.hidden = !open;
      this._bell.setAttribute("aria-expanded", String(open));
      if (open) {
        this._renderList();
        (this._list.querySelector("li") || this._panel).focus();
        if (Number(this._counts.unseen) > 0) {
          this._call("POST", this._userPath("/seen-all")).catch(function () { /* only a hint */ });
        }
      } else if (!leaveFocus) {
        this._bell.focus();
      }
    }

    _onPanelKey(event) {
      if (event.key === "Escape") {
        event.preventDefault();
        this._setOpen(false);
        return;
      }
      var moves = { ArrowDown: 1, ArrowUp: -1, Home: "first", End: "last" };
      if (!(event.key in moves)) { return; }
      var items = Array.prototype.slice.call(this._list.querySelectorAll("li"));
      if (!items.length) { return; }
      event.preventDefault();
      var active = this.shadowRoot.activeElement;
      var current = items.indexOf(active && active.closest ? active.closest("li") : null);
      var move = moves[event.key];
      var next = move === "first" ? 0 : move === "last" ? items.length - 1
        : current < 0 ? 0 : Math.max(0, Math.min(items.length - 1, current + move));
      items[next].focus();
    }
  }

  window.customElements.define("notify-inbox", NotifyInbox);
})();
