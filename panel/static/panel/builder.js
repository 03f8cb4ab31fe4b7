// The payload builder. The form is drawn from the field specs the server read off the API's
// serializers; every change is sent to the preview endpoint, which builds the request and
// validates it with those serializers. Nothing is validated here: the server is the one judge.
(function () {
  const config = JSON.parse(document.getElementById("builder-config").textContent);
  const $ = (id) => document.getElementById(id);
  const csrf = document.querySelector("[name=csrfmiddlewaretoken]").value;
  const state = { ids: null, built: null, tab: "json", timer: null, seq: 0 };

  const el = (tag, attrs = {}, children = []) => {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs)) {
      if (value === undefined || value === null || value === false) continue;
      if (key === "text") node.textContent = value;
      else node.setAttribute(key, value === true ? "" : value);
    }
    for (const child of children) node.appendChild(child);
    return node;
  };
  const option = (value, label, selected) => el("option", { value, text: label ?? value, selected: selected || null });

  // --- static selects ---------------------------------------------------------------------------
  for (const [value, label] of Object.entries(config.request_types)) {
    $("b-request-type").appendChild(option(value, label, value === config.initial.request_type));
  }
  for (const value of config.command_types) {
    $("b-command-type").appendChild(option(value, value, value === config.initial.command_type));
  }
  for (const value of config.tenants) $("b-tenant").appendChild(option(value, value, value === config.initial.tenant_id));

  function fillAccounts() {
    const tenant = $("b-tenant").value;
    const pick = $("b-account-pick");
    pick.innerHTML = "";
    const mine = config.accounts.filter((a) => a.tenant_id === tenant);
    mine.forEach((a, i) => pick.appendChild(option(String(i), `${a.login} @ ${a.server}`)));
    pick.appendChild(option("custom", mine.length ? "Another account…" : "No registered account: type one"));
    const first = mine[0] || config.spec.samples.account;
    $("b-login").value = first.login ?? first.account_login;
    $("b-server").value = first.server;
    $("b-tacid").value = first.trading_account_id || "";
    pick._accounts = mine;
  }

  // --- fields from the serializers' specs -------------------------------------------------------
  function valueOf(spec, sample) {
    if (sample !== undefined) return sample;
    return spec.default;
  }

  function renderField(spec, path, sample) {
    const id = "f-" + path.replace(/\./g, "-");
    const label = el("label", { for: id, text: spec.name + (spec.required ? " *" : "") });
    const value = valueOf(spec, sample);
    if (spec.kind === "object") {
      const box = el("fieldset", {}, [el("legend", { text: spec.name })]);
      const row = el("div", { class: "panel-row" });
      for (const child of spec.fields || []) row.appendChild(renderField(child, `${path}.${child.name}`, value ? value[child.name] : undefined));
      box.appendChild(row);
      return box;
    }
    let input;
    if (spec.kind === "boolean" && !spec.required && (spec.default === null || spec.default === undefined)) {
      // Optional with no default of its own (a Rules v2 field): absent, true or false, so leaving
      // it alone sends nothing and the rule's own default applies (help says which).
      input = el("select", { id });
      input.appendChild(option("", "— (absent)", value === undefined || value === null));
      input.appendChild(option("true", "true", value === true));
      input.appendChild(option("false", "false", value === false));
    } else if (spec.kind === "boolean") {
      input = el("input", { type: "checkbox", id, checked: value === true });
      return tag(input, spec, path, el("div", { class: "panel-check" }, [input, el("label", { for: id, text: spec.name, style: "margin:0" })]));
    }
    if (spec.kind === "choice") {
      input = el("select", { id });
      if (!spec.required || spec.default !== null) input.appendChild(option("", "—"));
      for (const choice of spec.choices) input.appendChild(option(choice, choice, String(value) === choice));
    } else if (spec.kind === "json") {
      input = el("textarea", { id, rows: 3 });
      input.value = value ? JSON.stringify(value) : "";
    } else {
      const type = spec.kind === "integer" || spec.kind === "number" ? "number" : spec.kind === "date" ? "date" : "text";
      input = el("input", { type, id, step: spec.kind === "number" ? "any" : null });
      if (spec.kind === "list") input.value = Array.isArray(value) ? value.join(", ") : "";
      else input.value = value === null || value === undefined ? "" : String(value);
      if (spec.kind === "datetime") input.placeholder = "2026-05-29T12:00:00Z";
      if (spec.kind === "list") input.placeholder = "comma-separated";
    }
    const help = [spec.kind + (spec.kind === "list" ? ` of ${spec.child.kind}` : ""), spec.help].filter(Boolean).join(" · ");
    return tag(input, spec, path, el("div", {}, [label, input, el("div", { class: "panel-help", text: help })]));
  }

  function tag(input, spec, path, wrapper) {
    input.dataset.path = path;
    input.dataset.kind = spec.kind;
    // Required but nullable (a rule that may be off): left empty, it is sent as null.
    if (spec.required && spec.allow_null) input.dataset.emptyIsNull = "1";
    if (spec.child) input.dataset.childKind = spec.child.kind;
    return wrapper;
  }

  function renderFields() {
    const type = $("b-request-type").value;
    const commandType = $("b-command-type").value;
    $("b-command-type-box").hidden = !(type === "command" || type === "flat_command");
    $("b-tacid-box").hidden = type === "sync_request" || type === "flat_command";
    const box = $("b-fields");
    box.innerHTML = "";
    let specs = [];
    let sample = {};
    if (type === "command" || type === "flat_command") {
      specs = [...config.spec.common, ...config.spec.commands[commandType]];
      if (type === "flat_command") specs = config.spec.commands[commandType];
      sample = config.spec.samples.commands[commandType] || {};
    } else if (type === "policy_snapshot") {
      specs = config.spec.policy;
      sample = config.spec.samples.policy;
    }
    const row = el("div", { class: "panel-row" });
    for (const spec of specs) {
      const node = renderField(spec, spec.name, sample[spec.name]);
      (spec.kind === "object" ? box : row).appendChild(node);
    }
    box.prepend(row);
  }

  // --- collecting typed values --------------------------------------------------------------
  function convert(kind, raw) {
    if (kind === "integer") return /^-?\d+$/.test(raw) ? parseInt(raw, 10) : raw;
    if (kind === "number") return raw !== "" && Number.isFinite(Number(raw)) ? Number(raw) : raw;
    return raw;
  }

  function collect() {
    const fields = {};
    for (const input of $("b-fields").querySelectorAll("[data-path]")) {
      const kind = input.dataset.kind;
      let value;
      if (kind === "boolean" && input.tagName === "SELECT") {
        if (input.value === "") continue;
        value = input.value === "true";
      } else if (kind === "boolean") value = input.checked;
      else if (kind === "list") {
        const parts = input.value.split(",").map((s) => s.trim()).filter(Boolean);
        if (!parts.length) continue;
        value = parts.map((p) => convert(input.dataset.childKind, p));
      } else if (kind === "json") {
        if (!input.value.trim()) continue;
        try { value = JSON.parse(input.value); } catch (e) { value = input.value; }
      } else {
        if (input.value === "" && input.dataset.emptyIsNull) value = null;
        else if (input.value === "") continue;
        else value = convert(kind, input.value);
      }
      const keys = input.dataset.path.split(".");
      let node = fields;
      keys.slice(0, -1).forEach((k) => { node = node[k] = node[k] || {}; });
      node[keys[keys.length - 1]] = value;
    }
    return fields;
  }

  function request() {
    const login = $("b-login").value;
    return {
      request_type: $("b-request-type").value,
      command_type: $("b-command-type").value,
      tenant_id: $("b-tenant").value,
      account: {
        account_login: /^\d+$/.test(login) ? parseInt(login, 10) : login,
        server: $("b-server").value,
        trading_account_id: $("b-tacid").value,
      },
      fields: collect(),
      ids: state.ids,
    };
  }

  async function post(url, body) {
    const response = await fetch(url, {
      method: "POST",
      headers: { "Content-Type": "application/json", "X-CSRFToken": csrf },
      body: JSON.stringify(body),
      credentials: "same-origin",
    });
    const data = await response.json().catch(() => ({ error: `HTTP ${response.status}` }));
    return { status: response.status, data };
  }

  // --- preview --------------------------------------------------------------------------------
  function schedule() {
    // Until the newest preview is back, the badge says so: nobody copies or sends a stale request.
    clearTimeout(state.timer);
    state.seq++;
    const badge = $("b-valid");
    badge.textContent = "validating…";
    badge.className = "panel-badge info pending";
    $("b-send").disabled = true;
    state.timer = setTimeout(preview, 200);
  }

  async function preview() {
    const seq = ++state.seq;
    const { status, data } = await post(config.preview_url, request());
    if (seq !== state.seq) return; // a newer preview is on its way
    if (status !== 200) {
      state.built = null;
      showErrors([{ field: "", message: data.error || `HTTP ${status}` }], []);
      return;
    }
    state.ids = data.ids;
    state.built = data;
    $("b-out-json").textContent = data.body ? JSON.stringify(data.body, null, 2) : `${data.method} ${data.path}\n(no body)`;
    $("b-out-curl").textContent = data.curl;
    $("b-out-powershell").textContent = data.powershell;
    $("b-target").textContent = `${data.method} ${data.path}`;
    showErrors(data.errors, data.warnings || []);
  }

  function showErrors(errors, warnings) {
    const valid = errors.length === 0;
    const badge = $("b-valid");
    badge.textContent = valid ? "valid" : `${errors.length} error(s)`;
    badge.className = "panel-badge " + (valid ? "ok" : "danger");
    $("b-errors").innerHTML = "";
    for (const e of errors) $("b-errors").appendChild(el("li", { text: e.field ? `${e.field}: ${e.message}` : e.message }));
    $("b-warnings").innerHTML = "";
    for (const w of warnings) $("b-warnings").appendChild(el("li", { text: w }));
    $("b-send").disabled = !(valid && state.built && config.can_send);
    $("b-send-hint").textContent = config.can_send ? "" : "Sending needs the operators' role.";
  }

  // --- send -----------------------------------------------------------------------------------
  // Every send that changes state is sent twice: first unconfirmed, and the server answers 428 with the
  // account, the environment and the effect; only the operator's click on the confirmation sends it.
  function askToConfirm(facts, built) {
    $("b-confirm-account").textContent = facts.account;
    $("b-confirm-environment").textContent = facts.environment;
    $("b-confirm-effect").textContent = facts.effect;
    $("b-confirm").hidden = false;
    $("b-confirm-send").onclick = () => { $("b-confirm").hidden = true; send(built); };
    $("b-confirm-send").focus();
  }
  $("b-confirm-cancel").addEventListener("click", () => { $("b-confirm").hidden = true; $("b-send").disabled = false; });

  async function send(confirmed) {
    if (!state.built) return;
    $("b-send").disabled = true;
    const built = confirmed || state.built;
    const { status, data } = await post(config.send_url, {
      tenant_id: $("b-tenant").value,
      method: built.method,
      path: built.path,
      headers: built.headers,
      body: built.body,
      confirmed: Boolean(confirmed),
    });
    if (status === 428 && data.confirm) {
      askToConfirm(data.confirm, built);
      return;
    }
    $("b-send").disabled = false;
    $("b-result").hidden = false;
    const shown = status === 200 ? data.status : status;
    const badge = $("b-result-status");
    badge.textContent = String(shown);
    badge.className = "panel-badge " + (shown >= 200 && shown < 300 ? "ok" : "danger");
    $("b-result-replayed").hidden = !(data && data.replayed);
    $("b-result-body").textContent = JSON.stringify(status === 200 ? data.body : data, null, 2);
    const links = $("b-result-links");
    links.innerHTML = "";
    if (data.command_url) links.appendChild(el("a", { class: "panel-link", href: data.command_url, id: "b-command-link", text: "Open the command" }));
    if (data.send_url) {
      links.appendChild(document.createTextNode(" · "));
      links.appendChild(el("a", { class: "panel-link", href: data.send_url, text: "Logged as a panel send" }));
    }
    if (data.status >= 200 && data.status < 300) {
      links.appendChild(document.createTextNode(" · Sending again with the same ids replays the stored response; click New ids for a new request."));
    }
  }

  // --- wiring ---------------------------------------------------------------------------------
  $("b-request-type").addEventListener("change", () => { renderFields(); schedule(); });
  $("b-command-type").addEventListener("change", () => { state.ids = state.ids && { ...state.ids, command_id: null }; renderFields(); schedule(); });
  $("b-tenant").addEventListener("change", () => { fillAccounts(); schedule(); });
  $("b-account-pick").addEventListener("change", (event) => {
    const chosen = event.target._accounts[Number(event.target.value)];
    if (chosen) {
      $("b-login").value = chosen.login;
      $("b-server").value = chosen.server;
      $("b-tacid").value = chosen.trading_account_id || "";
    }
    schedule();
  });
  $("builder-form").addEventListener("input", (event) => { if (event.target.id !== "b-account-pick") schedule(); });
  $("builder-form").addEventListener("change", (event) => { if (event.target.dataset.path) schedule(); });
  $("b-new-ids").addEventListener("click", () => { state.ids = null; schedule(); });
  $("b-send").addEventListener("click", () => send(null));
  for (const button of document.querySelectorAll("[data-tab]")) {
    button.addEventListener("click", () => {
      state.tab = button.dataset.tab;
      for (const other of document.querySelectorAll("[data-tab]")) other.classList.toggle("active", other === button);
      for (const name of ["json", "curl", "powershell", "headers"]) $("b-out-" + name).hidden = name !== state.tab;
    });
  }
  $("b-copy").addEventListener("click", () => {
    const source = $("b-out-" + (state.tab === "headers" ? "curl" : state.tab));
    navigator.clipboard && navigator.clipboard.writeText(source.textContent);
  });

  fillAccounts();
  renderFields();
  preview();
})();
