/* Notify: small enhancements on top of pages that work without script.
   - the send form hides fields the chosen type does not use, and disables itself on submit;
   - a sent notification's status, a user's list and the counts poll the JSON API, the
     dashboard's chart of the last hour /dashboard/activity;
   - times are shown in local time, and "in 25 s" for the next retry;
   - the retry button retries through the JSON API without leaving the page (cancel posts the
     page's own form: it works the same with or without script).
   Everything is written with textContent: no server text is ever parsed as HTML. */
(function () {
  "use strict";

  var LABELS = {
    pending: "Pending", queued: "Queued", sending: "Sending", sent: "Sent",
    retry_scheduled: "Retry scheduled", failed_permanently: "Failed", scheduled: "Scheduled",
    cancelled: "Cancelled", suppressed: "Suppressed"
  };
  var TYPE_LABELS = { in_app: "In-app", email: "Email", sms: "SMS" };
  var INBOX_LABELS = { unread: "Unread", seen: "Seen, unread", read: "Read", archived: "Archived" };
  var FINAL = { sent: true, failed_permanently: true, cancelled: true, suppressed: true };
  var RETRYABLE = { failed_permanently: true, retry_scheduled: true };
  var CANCELLABLE = { scheduled: true, pending: true, queued: true, retry_scheduled: true };
  var REASONED = { scheduled: true, cancelled: true, suppressed: true };

  function $(selector, root) { return (root || document).querySelector(selector); }
  function $all(selector, root) {
    return Array.prototype.slice.call((root || document).querySelectorAll(selector));
  }

  function getJSON(url, options) {
    var settings = Object.assign({ headers: { Accept: "application/json" }, cache: "no-store",
      credentials: "same-origin" }, options || {});
    return fetch(url, settings).then(function (response) {
      return response.json().catch(function () { return {}; }).then(function (body) {
        return { ok: response.ok, status: response.status, body: body };
      });
    });
  }

  /* Runs task() now and again after the delay it resolves to (null stops); pauses while the page
     is hidden. Returns a function that runs it again at once. */
  function poll(task) {
    var timer = null;
    var running = false;
    var stopped = false;
    function run() {
      if (timer) { clearTimeout(timer); timer = null; }
      if (running || document.hidden) { return; }
      running = true;
      Promise.resolve().then(task).catch(function () { return 5000; }).then(function (delay) {
        running = false;
        stopped = delay === null || delay === undefined;
        if (!stopped && !document.hidden) { timer = setTimeout(run, delay); }
      });
    }
    document.addEventListener("visibilitychange", function () {
      if (!document.hidden && !stopped) { run(); }
    });
    run();
    return run;
  }

  // -- times ---------------------------------------------------------------------------------
  var absolute = new Intl.DateTimeFormat(undefined, {
    year: "numeric", month: "short", day: "numeric",
    hour: "2-digit", minute: "2-digit", second: "2-digit"
  });
  var thisYear = new Intl.DateTimeFormat(undefined, {
    month: "short", day: "numeric", hour: "2-digit", minute: "2-digit", second: "2-digit"
  });

  function local(date) {
    return (date.getFullYear() === new Date().getFullYear() ? thisYear : absolute).format(date);
  }

  function relative(date) {
    var seconds = Math.round((date.getTime() - Date.now()) / 1000);
    var size = Math.abs(seconds);
    var text = size < 60 ? size + " s" : size < 3600 ? Math.round(size / 60) + " min"
      : Math.round(size / 3600) + " h";
    if (size < 1) { return "now"; }
    return seconds > 0 ? "in " + text : text + " ago";
  }

  function showTime(element) {
    var date = new Date(element.getAttribute("datetime"));
    if (isNaN(date.getTime())) { return; }
    element.title = absolute.format(date);
    if (element.hasAttribute("data-utc")) { return; }  // the server's UTC text stays
    element.textContent = element.hasAttribute("data-relative") ? relative(date) : local(date);
  }

  function timeElement(iso, isRelative) {
    var element = document.createElement("time");
    element.setAttribute("datetime", iso);
    if (isRelative) { element.setAttribute("data-relative", ""); }
    element.textContent = iso;
    showTime(element);
    return element;
  }

  function dash() {
    var element = document.createElement("span");
    element.className = "muted";
    element.textContent = "—";
    return element;
  }

  // -- filling a notification into markup marked with data-field ------------------------------
  function badge(status) {
    var element = document.createElement("span");
    element.className = "badge";
    element.setAttribute("data-status", status);
    element.title = status;
    var dot = document.createElement("span");
    dot.className = "dot";
    dot.setAttribute("aria-hidden", "true");
    var label = document.createElement("span");
    label.className = "badge-label";
    label.textContent = LABELS[status] || status;
    element.appendChild(dot);
    element.appendChild(label);
    return element;
  }

  function replaceWith(element, child) {
    element.textContent = "";
    element.appendChild(child);
  }

  var FILLERS = {
    id: function (element, n) {
      if ("value" in element) { element.value = n.id; } else { element.textContent = n.id; }
    },
    status: function (element, n) {
      var current = $(".badge", element);
      if (!current || current.getAttribute("data-status") !== n.status) { replaceWith(element, badge(n.status)); }
    },
    retry_count: function (element, n) { element.textContent = n.retry_count + " of " + n.max_retries; },
    next_retry_time: function (element, n) {
      replaceWith(element, n.next_retry_time ? timeElement(n.next_retry_time, true) : dash());
    },
    last_error: function (element, n) {
      if (!n.last_error) { replaceWith(element, dash()); return; }
      var text = document.createElement("span");
      text.className = "error-text";
      text.textContent = n.last_error;
      replaceWith(element, text);
    },
    created_at: function (element, n) { replaceWith(element, timeElement(n.created_at, false)); },
    notification_type: function (element, n) {
      element.setAttribute("data-type", n.notification_type);
      element.textContent = TYPE_LABELS[n.notification_type] || n.notification_type;
    },
    subject: function (element, n) { element.textContent = n.subject || ""; element.hidden = !n.subject; },
    message: function (element, n) { element.textContent = n.message; },
    recipient: function (element, n) { element.textContent = n.email || n.phone || ""; },
    retry_label: function (element, n) {
      element.setAttribute("aria-label", "Retry notification " + n.id.slice(0, 8));
    },
    cancel_label: function (element, n) {
      element.setAttribute("aria-label", "Cancel notification " + n.id.slice(0, 8));
    },
    send_at: function (element, n) {
      element.hidden = !(n.status === "scheduled" && n.send_at);
      var current = $("time", element);
      if (element.hidden || (current && current.getAttribute("datetime") === n.send_at)) { return; }
      var time = timeElement(n.send_at, false);
      time.setAttribute("data-utc", "");
      time.textContent = n.send_at;  // ISO, UTC
      element.textContent = "Goes at ";
      element.appendChild(time);
    },
    inbox_state: function (element, n) {  // as the inbox_state macro in _macros.html
      var state = n.archived_at ? "archived" : n.read_at ? "read" : n.seen_at ? "seen" : "unread";
      var since = n.archived_at || n.read_at || n.seen_at;
      element.hidden = n.notification_type !== "in_app";
      var shown = $("time", element);
      var shownSince = shown ? shown.getAttribute("datetime") : "";
      if (element.getAttribute("data-inbox") === state && shownSince === (since || "")) { return; }
      element.setAttribute("data-inbox", state);
      element.textContent = INBOX_LABELS[state];
      if (since) {
        element.appendChild(document.createTextNode(" "));
        element.appendChild(timeElement(since, false));
      }
    },
    status_reason: function (element, n) {
      var text = REASONED[n.status] && n.status_reason ? n.status_reason : "";
      element.textContent = text;
      element.hidden = !text;
    }
  };

  function fill(root, n) {
    $all("[data-field]", root).forEach(function (element) {
      var filler = FILLERS[element.getAttribute("data-field")];
      if (filler) { filler(element, n); }
    });
    $all("[data-row]", root).forEach(function (element) {
      element.hidden = !n[element.getAttribute("data-row")];
    });
    var retryForm = $("[data-retry-form]", root);
    if (retryForm) { retryForm.hidden = !RETRYABLE[n.status]; }
    var cancelForm = $("[data-cancel-form]", root);
    if (cancelForm) { cancelForm.hidden = !CANCELLABLE[n.status]; }
    root.setAttribute("data-status", n.status);
  }

  // -- the send form -------------------------------------------------------------------------
  function initSendForm(form) {
    function applyType() {
      var checked = $("input[name=notification_type]:checked", form);
      var type = checked ? checked.value : "";
      form.setAttribute("data-type", type);
      $all("[data-only]", form).forEach(function (field) {
        field.hidden = type !== "" && field.getAttribute("data-only") !== type;
      });
    }
    form.addEventListener("change", function (event) {
      if (event.target.name === "notification_type") { applyType(); }
    });
    applyType();
    form.addEventListener("submit", function (event) {
      if (form.getAttribute("data-submitting")) { event.preventDefault(); return; }
      form.setAttribute("data-submitting", "1");
      $all("button[type=submit]", form).forEach(function (button) {
        // aria-disabled rather than disabled: a disabled button would drop out of the post.
        button.setAttribute("aria-disabled", "true");
        var label = $("span", button);
        if (label && !button.getAttribute("data-label")) { button.setAttribute("data-label", label.textContent); }
        if (label && button.getAttribute("data-busy-label")) {
          label.textContent = button.getAttribute("data-busy-label");
        }
      });
    });
    // Back to a page that was being submitted: make the form usable again.
    window.addEventListener("pageshow", function () {
      form.removeAttribute("data-submitting");
      $all("button[type=submit]", form).forEach(function (button) {
        button.removeAttribute("aria-disabled");
        var label = $("span", button);
        if (label && button.getAttribute("data-label")) { label.textContent = button.getAttribute("data-label"); }
      });
    });
    var summary = $("#error-summary");
    if (summary) { summary.focus(); }
  }

  // -- one notification's live status ---------------------------------------------------------
  function initLiveNotification(panel) {
    var note = $("[data-live-note]", panel);
    var started = Date.now();
    panel.focus();
    poll(function () {
      return getJSON(panel.getAttribute("data-source")).then(function (reply) {
        if (!reply.ok) { if (note) { note.hidden = true; } return null; }
        fill(panel, reply.body);
        var done = FINAL[reply.body.status];
        if (note) { note.hidden = !!done; }
        if (done) { return null; }
        return Date.now() - started < 60000 ? 1000 : 5000;
      });
    });
  }

  // -- a user's list ---------------------------------------------------------------------------
  function initUserList(section) {
    var tbody = $("tbody", section);
    var template = $("template[data-row-template]", section);
    var empty = $("[data-empty]", section);
    var table = $("[data-table]", section);
    var notice = $("#user-notice");

    function rowFor(n) {
      var row = template.content.firstElementChild.cloneNode(true);
      row.setAttribute("data-id", n.id);
      fill(row, n);
      return row;
    }

    function render(items) {
      var rows = {};
      $all("tr[data-id]", tbody).forEach(function (row) { rows[row.getAttribute("data-id")] = row; });
      var sameRows = items.length === Object.keys(rows).length &&
        items.every(function (n) { return rows[n.id]; });
      var busy = tbody.contains(document.activeElement);
      items.forEach(function (n) {
        var row = rows[n.id];
        if (row && row.getAttribute("data-status") !== n.status) {
          row.classList.remove("updated");
          void row.offsetWidth;
          row.classList.add("updated");
        }
        if (row) { fill(row, n); }
      });
      if (!sameRows && !busy) {
        var fragment = document.createDocumentFragment();
        items.forEach(function (n) { fragment.appendChild(rows[n.id] || rowFor(n)); });
        tbody.textContent = "";
        tbody.appendChild(fragment);
      }
      table.hidden = items.length === 0;
      empty.hidden = items.length !== 0;
    }

    var refresh = poll(function () {
      return getJSON(section.getAttribute("data-source")).then(function (reply) {
        if (!reply.ok) { return 10000; }
        render(reply.body.notifications || []);
        return 3000;
      });
    });

    // Retry through the JSON API; without script the same form posts to the page itself.
    tbody.addEventListener("submit", function (event) {
      var form = event.target.closest("[data-retry-form]");
      if (!form) { return; }
      event.preventDefault();
      var row = form.closest("tr");
      var id = row.getAttribute("data-id");
      var button = $("button", form);
      var rowNote = $("[data-row-note]", row);
      button.disabled = true;
      // The session cookie alone never changes anything through the API: the form's CSRF
      // token (tied to this session) goes along in a header.
      var token = $("input[name=csrf_token]", form);
      var headers = { Accept: "application/json", "X-CSRF-Token": token ? token.value : "" };
      getJSON("/notifications/" + encodeURIComponent(id) + "/retry",
        { method: "POST", headers: headers })
        .then(function (reply) {
          if (reply.ok && reply.body.notification) {
            fill(row, reply.body.notification);
            say(rowNote, "Queued again", false);
          } else {
            say(rowNote, (reply.body && reply.body.error) || "Retry failed (" + reply.status + ")", true);
          }
        })
        .catch(function () { say(rowNote, "The service did not answer; try again", true); })
        .then(function () { button.disabled = false; refresh(); });
    });

    function say(element, text, bad) {
      element.textContent = text;
      element.classList.toggle("bad", bad);
      if (notice) { notice.textContent = text; }
    }
  }

  // -- live counts ---------------------------------------------------------------------------
  function pick(data, path) {
    return path.split(".").reduce(function (value, key) {
      return value === null || value === undefined ? value : value[key];
    }, data);
  }

  function initStats(root) {
    var note = $("[data-live-note]");
    var updated = $("[data-updated]");
    var clock = new Intl.DateTimeFormat(undefined, { hour: "2-digit", minute: "2-digit", second: "2-digit" });
    poll(function () {
      return getJSON(root.getAttribute("data-source")).then(function (reply) {
        if (!reply.ok) { if (note) { note.hidden = true; } return 10000; }
        var stats = reply.body;
        var by = stats.by_status || {};
        stats.in_flight = (by.pending || 0) + (by.queued || 0) + (by.sending || 0);
        $all("[data-stat]", root).forEach(function (element) {
          var value = pick(stats, element.getAttribute("data-stat"));
          if (value === null || value === undefined) { return; }
          var text = Number(value).toLocaleString();
          if (element.textContent !== text) {
            element.textContent = text;
            element.classList.remove("changed");
            void element.offsetWidth;
            element.classList.add("changed");
          }
        });
        $all("[data-bar]", root).forEach(function (bar) {
          var value = pick(stats, bar.getAttribute("data-bar")) || 0;
          bar.setAttribute("width", stats.total ? (100 * value / stats.total).toFixed(1) : "0");
        });
        var known = $("[data-queue-known]", root);
        var unknown = $("[data-queue-unknown]", root);
        if (known && unknown) { known.hidden = !stats.queue; unknown.hidden = !!stats.queue; }
        if (note) { note.hidden = false; }
        if (updated) { updated.textContent = clock.format(new Date()); }
        return 3000;
      });
    });
  }

  // -- notification templates: the send form's template picker ------------------------------
  function initTemplatePicker(form) {
    var select = $("[data-template-select]", form);
    var input = $("[data-template-input]", form);
    if (!select || !input) { return; }
    var use = $("[data-template-use]", form);
    if (use) { use.hidden = true; }  // the choice applies at once; no reload needed
    function apply() {
      var key = select.value;
      input.value = key;
      form.setAttribute("data-template", key);
      $all("[data-template-vars]", form).forEach(function (group) {
        var chosen = group.getAttribute("data-template-vars") === key;
        group.hidden = !chosen;
        group.disabled = !chosen;  // only the chosen template's fields are sent
      });
    }
    select.addEventListener("change", apply);
    apply();
  }

  // -- notification templates: the editor and its live preview -------------------------------
  var CHANNEL_LABELS = { email: "Email", sms: "SMS", in_app: "In-app" };
  var PART_LABELS = { subject: "Subject", text: "Text", html: "HTML", title: "Title", body: "Body",
    action_url: "Action URL" };

  function element(tag, className, text) {
    var node = document.createElement(tag);
    if (className) { node.className = className; }
    if (text !== undefined) { node.textContent = text; }
    return node;
  }

  function renderPreview(result, preview) {
    var fragment = document.createDocumentFragment();
    var problems = element("ul", "problems alert alert-error");
    problems.setAttribute("data-problems", "");
    Object.keys(preview.problems || {}).forEach(function (where) {
      var item = element("li");
      item.appendChild(element("code", "", where));
      item.appendChild(document.createTextNode(" " + preview.problems[where]));
      problems.appendChild(item);
    });
    problems.hidden = !problems.children.length;
    fragment.appendChild(problems);
    Object.keys(preview.channels || {}).forEach(function (channel) {
      var rendered = preview.channels[channel];
      var article = element("article", "rendered");
      article.setAttribute("data-channel", channel);
      var title = element("h3");
      title.appendChild(element("span", "", CHANNEL_LABELS[channel] || channel));
      title.appendChild(document.createTextNode(" "));
      title.appendChild(element("span", "muted", "(" + rendered.locale + ")"));
      article.appendChild(title);
      var list = element("dl", "rendered-parts");
      Object.keys(rendered.parts || {}).forEach(function (part) {
        var row = element("div");
        row.appendChild(element("dt", "", PART_LABELS[part] || part));
        var value = element("dd");
        var pre = element("pre", "", rendered.parts[part]);
        pre.setAttribute("data-part", part);
        value.appendChild(pre);
        row.appendChild(value);
        list.appendChild(row);
      });
      article.appendChild(list);
      if (rendered.sms) {
        var count = rendered.sms.segments;
        var info = element("p", "sms-info", count + " segment" + (count === 1 ? "" : "s") + ", " + rendered.sms.encoding);
        info.setAttribute("data-sms", "");
        article.appendChild(info);
      }
      fragment.appendChild(article);
    });
    result.textContent = "";
    result.appendChild(fragment);
  }

  /* The live preview renders the editor form as typed (unsaved edits too): the preview's
     fields belong to that form (form="template-form"), so its FormData carries them all. */
  function initTemplatePreview(section) {
    var panel = $("[data-preview-form]", section);
    var editor = $("#template-form");
    var result = $("[data-preview-result]", section);
    var data = $("textarea[name=sample_data]", panel);
    var locale = $("select[name=preview_locale]", panel);
    var button = $("[data-preview-button]", panel);
    var note = $("[data-live-note]", section);
    var timer = null;
    var latest = 0;
    if (!editor) { return; }

    function showError(name, text) {
      var box = $("[data-preview-error=" + name + "]", panel);
      var control = name === "data" ? data : locale;
      if (!box) { return; }
      box.hidden = !text;
      $("span", box).textContent = text || "";
      box.parentNode.classList.toggle("has-error", !!text);
      if (text) {
        control.setAttribute("aria-invalid", "true");
        control.setAttribute("aria-describedby", box.id);
      } else {
        control.removeAttribute("aria-invalid");
        control.removeAttribute("aria-describedby");
      }
    }

    function update() {
      try {
        if (data.value.trim()) { JSON.parse(data.value); }
      } catch (error) {
        showError("data", "Sample data is not valid JSON: " + error.message);
        return;
      }
      showError("data", "");
      showError("locale", "");
      var request = ++latest;
      getJSON(section.getAttribute("data-source"), { method: "POST",
        body: new URLSearchParams(new FormData(editor)) })
        .then(function (reply) {
          if (request !== latest) { return; }  // a newer preview is on its way
          if (reply.ok) { renderPreview(result, reply.body); return; }
          var fields = Object.assign({}, (reply.body && reply.body.fields) || {});
          if (fields.locale) { showError("locale", "Locale " + fields.locale); return; }
          if (fields.data) { showError("data", "Sample data " + fields.data); return; }
          if (Object.keys(fields).length) {  // the form makes no template yet: say why
            renderPreview(result, { problems: fields, channels: {} });
            return;
          }
          showError("data", (reply.body && reply.body.error) || "Preview failed (" + reply.status + ")");
        })
        .catch(function () { showError("data", "The service did not answer; try again"); });
    }

    function soon() {
      if (timer) { clearTimeout(timer); }
      timer = setTimeout(update, 300);
    }
    editor.addEventListener("input", soon);  // typing in any of the editor's fields
    data.addEventListener("input", soon);
    locale.addEventListener("change", update);
    if (button) {
      button.addEventListener("click", function (event) { event.preventDefault(); update(); });
    }
    if (note) { note.hidden = false; }
  }

  function initTemplateForm(form) {
    var add = $("[data-add-locale]", form);
    if (add) {
      // Enter in "Add a locale" adds it, rather than saving the whole form.
      add.addEventListener("keydown", function (event) {
        if (event.key !== "Enter") { return; }
        event.preventDefault();
        $("button[value=add_locale]", form).click();
      });
    }
    var summary = $("#error-summary");
    if (summary) { summary.focus(); }
  }

  // -- the dashboard's last hour, receipts and webhooks -----------------------------------------
  /* The server computes the charts' geometry (common/web_dashboard.py) for the first render and
     for /dashboard/activity alike; this only puts it into the SVGs with DOM methods. */
  var SVG = "http://www.w3.org/2000/svg";

  function svgElement(tag, attributes, text) {
    var node = document.createElementNS(SVG, tag);
    Object.keys(attributes).forEach(function (name) { node.setAttribute(name, attributes[name]); });
    if (text !== undefined) { node.textContent = text; }
    return node;
  }

  function drawTicks(svg, yTicks, xTicks) {
    var ys = $("[data-y-ticks]", svg);
    var xs = $("[data-x-ticks]", svg);
    var left = ys.getAttribute("data-left");
    var right = ys.getAttribute("data-right");
    ys.textContent = "";
    yTicks.forEach(function (tick) {
      ys.appendChild(svgElement("line", { "class": "grid", x1: left, x2: right, y1: tick.y, y2: tick.y }));
      ys.appendChild(svgElement("text", { x: left - 6, y: tick.y + 4, "text-anchor": "end" }, tick.label));
    });
    xs.textContent = "";
    xTicks.forEach(function (tick) {
      xs.appendChild(svgElement("text", { x: tick.x, y: xs.getAttribute("data-y"), "text-anchor": "middle" }, tick.label));
    });
  }

  function drawChart(svg, part, xTicks) {
    Object.keys(part.paths).forEach(function (name) {
      var path = $("[data-series=" + name + "]", svg);
      if (path) { path.setAttribute("d", part.paths[name]); }
    });
    drawTicks(svg, part.y_ticks, xTicks);
    var alerts = $("[data-alerts]", svg);
    if (alerts) {
      alerts.textContent = "";
      (part.alerts || []).forEach(function (band) {
        alerts.appendChild(svgElement("rect", { "class": "chart-alert", x: band.x, y: 10, width: band.width, height: 140 }));
      });
    }
  }

  function showActivity(root, activity) {
    $("[data-activity-off]", root).hidden = activity.recorded;
    $("[data-activity-down]", root).hidden = !activity.recorded || activity.available;
    var charts = $("[data-activity-charts]", root);
    charts.hidden = !activity.available;
    if (!activity.available) { return; }
    drawChart($("[data-chart=counts]", root), activity.chart.counts, activity.chart.x_ticks);
    drawChart($("[data-chart=latency]", root), activity.chart.latency, activity.chart.x_ticks);
    $all("[data-activity-summary]", root).forEach(function (desc) { desc.textContent = activity.summary; });
    $all("[data-activity-total]", root).forEach(function (total) {
      total.textContent = Number(activity.totals[total.getAttribute("data-activity-total")] || 0).toLocaleString();
    });
  }

  function showReceipts(root, receipts) {
    var table = $("[data-receipts]", root);
    $("[data-receipts-off]", root).hidden = receipts.available;
    $("[data-receipts-empty]", root).hidden = !receipts.available || !!receipts.counts.length;
    table.hidden = !receipts.available || !receipts.counts.length;
    var tbody = $("tbody", table);
    tbody.textContent = "";
    receipts.counts.forEach(function (row) {
      var tr = element("tr");
      tr.setAttribute("data-receipt", row.status);
      tr.appendChild(element("td", "", row.status.replace(/_/g, " ")));
      var count = element("td", "num", Number(row.count).toLocaleString());
      count.setAttribute("data-count", "");
      tr.appendChild(count);
      tbody.appendChild(tr);
    });
  }

  function showWebhooks(root, webhooks) {
    var table = $("[data-webhooks]", root);
    var endpoints = webhooks.endpoints || [];
    table.hidden = !webhooks.available || !endpoints.length;
    $("[data-webhooks-empty]", root).hidden = !webhooks.available || !!endpoints.length;
    $("[data-webhooks-off]", root).hidden = webhooks.available;
    var tbody = $("tbody", table);
    tbody.textContent = "";
    endpoints.forEach(function (hook) {
      var tr = element("tr");
      tr.setAttribute("data-webhook", hook.id);
      tr.appendChild(element("td", "url", hook.url));
      var state = element("td");
      state.appendChild(element("span", "state " + (hook.enabled ? "state-on" : "state-off"),
        hook.enabled ? "Enabled" : "Disabled"));
      if (!hook.enabled && hook.disabled_reason) {
        state.appendChild(document.createTextNode(" "));
        state.appendChild(element("span", "muted", "(" + hook.disabled_reason + ")"));
      }
      tr.appendChild(state);
      tr.appendChild(element("td", "num", String(hook.failures_in_a_row)));
      var error = element("td");
      error.appendChild(hook.last_error ? element("span", "error-text", hook.last_error) : dash());
      tr.appendChild(error);
      tbody.appendChild(tr);
    });
  }

  function initActivity(root) {
    poll(function () {
      return getJSON(root.getAttribute("data-source")).then(function (reply) {
        if (!reply.ok) { return 15000; }
        showActivity(root, reply.body.activity);
        showReceipts(root, reply.body.receipts);
        showWebhooks(root, reply.body.webhooks);
        root.setAttribute("data-refreshed", String(Date.now()));
        return 5000;
      });
    });
  }

  // -- start ---------------------------------------------------------------------------------
  $all("time[datetime]").forEach(showTime);
  setInterval(function () { $all("time[data-relative]").forEach(showTime); }, 1000);
  $all("[data-send-form]").forEach(initSendForm);
  $all("[data-live-notification]").forEach(initLiveNotification);
  $all("[data-user-list]").forEach(initUserList);
  $all("[data-live-stats]").forEach(initStats);
  $all("[data-live-activity]").forEach(initActivity);
  $all("[data-send-form]").forEach(initTemplatePicker);
  $all("[data-template-preview]").forEach(initTemplatePreview);
  $all("[data-template-form]").forEach(initTemplateForm);
})();
