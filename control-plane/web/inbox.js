/*
 * Nudge web inbox: a notification bell, a full inbox and a preferences
 * page, in vanilla JavaScript (ES2020, no framework, no build step).
 *
 *   <script src="https://nudge.example.com/inbox.js"
 *           data-nudge-token="<jwt>" data-nudge-target="#bell" defer></script>
 *
 * Options (data-nudge-* attributes of the script tag):
 *   token            the user's token (HS256 JWT from the app's backend)
 *   target           CSS selector of the element the view is mounted in
 *   view             "bell" (default), "inbox" or "preferences"
 *   api              base URL of the control plane (default: the script's origin)
 *   inbox-url        "View all" link of the dropdown (default: <api>/inbox; "none" hides it)
 *   preferences-url  the inbox's preferences link (default: <api>/inbox/preferences)
 *   limit            items in the dropdown (default 10)
 *
 * JS API: Nudge.inbox.setToken(t), .mount(element, {view}), .open(),
 * .close(), .refresh(), .on(event, fn) (events: counts, notification,
 * change, reset, transport, unauthorized), .counts, .transport.
 *
 * Every view lives in a Shadow DOM (the host page's CSS does not leak in)
 * with nudge- prefixed classes; data is only ever put in the page as text
 * (textContent, attribute values), never as HTML.
 */
(() => {
  'use strict';

  if (window.Nudge && window.Nudge.inbox) return; // the tag is on the page twice

  const script = document.currentScript;
  const data = (name) => (script && script.getAttribute(`data-nudge-${name}`)) || null;
  const scriptUrl = new URL(script && script.src ? script.src : '/inbox.js', location.href);
  const API = new URL(data('api') || scriptUrl.origin, location.href).href.replace(/\/$/, '');
  const STYLESHEET = new URL('inbox.css', scriptUrl).href;
  const INBOX_URL = data('inbox-url') || `${API}/inbox`;
  const PREFERENCES_URL = data('preferences-url') || `${API}/inbox/preferences`;
  const DROPDOWN_LIMIT = Math.min(Math.max(parseInt(data('limit') || '10', 10) || 10, 1), 50);
  const PAGE_SIZE = 20;
  const POLL_MS = 20000;
  const TOKEN_KEY = 'nudge.access_token';

  const CHANNEL_NAMES = {
    in_app: 'In-app',
    email: 'Email',
    sms: 'SMS',
    apns: 'iOS push',
    fcm: 'Android push',
    web_push: 'Browser push',
    webhook: 'Webhook',
  };
  const FREQUENCY_NAMES = {
    instant: 'Instantly',
    hourly: 'Hourly digest',
    daily: 'Daily digest',
    weekly: 'Weekly digest',
    never: 'Never',
  };

  // ---------------------------------------------------------------------
  // Small helpers

  let idCounter = 0;
  const uid = (prefix) => `nudge-${prefix}-${++idCounter}`;

  /** Builds an element. Strings among `children` become text nodes. */
  function h(tag, attrs, ...children) {
    const el = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs || {})) {
      if (value === null || value === undefined || value === false) continue;
      if (key.startsWith('on') && typeof value === 'function') {
        el.addEventListener(key.slice(2), value);
      } else if (key === 'text') {
        el.textContent = String(value);
      } else if (key in PROPS) {
        el[PROPS[key]] = value;
      } else {
        el.setAttribute(key, value === true ? '' : String(value));
      }
    }
    for (const child of children.flat()) {
      if (child === null || child === undefined || child === false) continue;
      el.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return el;
  }
  const PROPS = { checked: 'checked', value: 'value', disabled: 'disabled', selected: 'selected' };

  const humanise = (name) => String(name).replace(/[_-]+/g, ' ').replace(/^\w/, (c) => c.toUpperCase());
  const channelName = (c) => CHANNEL_NAMES[c] || humanise(c);

  const relative = new Intl.RelativeTimeFormat(undefined, { numeric: 'auto' });
  function timeText(iso) {
    const then = new Date(iso);
    const seconds = (then.getTime() - Date.now()) / 1000;
    const abs = Math.abs(seconds);
    if (abs < 45) return relative.format(0, 'second');
    if (abs < 3600) return relative.format(Math.round(seconds / 60), 'minute');
    if (abs < 86400) return relative.format(Math.round(seconds / 3600), 'hour');
    if (abs < 7 * 86400) return relative.format(Math.round(seconds / 86400), 'day');
    return then.toLocaleDateString();
  }

  /** A link target from notification data, only when it is http(s). */
  /** When a snooze ends, as the user reads clocks: a time today, else a day and time. */
  function snoozeText(iso) {
    const when = new Date(iso);
    const today = new Date().toDateString() === when.toDateString();
    return today
      ? when.toLocaleTimeString([], { hour: 'numeric', minute: '2-digit' })
      : when.toLocaleString([], { weekday: 'short', month: 'short', day: 'numeric', hour: 'numeric', minute: '2-digit' });
  }

  /**
   * The snooze choices the inbox offers, in the user's own time zone:
   * an hour from now, tomorrow at 9:00, and next Monday at 9:00.
   */
  function snoozeChoices(now = new Date()) {
    const at9 = (days) => {
      const d = new Date(now);
      d.setDate(d.getDate() + days);
      d.setHours(9, 0, 0, 0);
      return d;
    };
    const toMonday = ((8 - now.getDay()) % 7) || 7;
    return [
      { label: 'For 1 hour', until: new Date(now.getTime() + 3600000) },
      { label: 'Until tomorrow', until: at9(1) },
      { label: 'Until next week', until: at9(toMonday) },
    ];
  }

  /** Items whose state belongs in a view that shows snoozed items or not. */
  function snoozedAs(item, snoozed) {
    return !!item.snoozed_until === !!snoozed;
  }

  /** `items` (newest first by id) with `item` in its place, when that place is among them. */
  function insertByTime(items, item, complete) {
    const index = items.findIndex((i) => i.id < item.id);
    if (index < 0) return complete ? [...items, item] : items;
    return [...items.slice(0, index), item, ...items.slice(index)];
  }

  function safeUrl(value) {
    if (typeof value !== 'string') return null;
    try {
      const url = new URL(value, location.href);
      return url.protocol === 'https:' || url.protocol === 'http:' ? url.href : null;
    } catch {
      return null;
    }
  }

  class ApiError extends Error {
    constructor(status, code, message) {
      super(message);
      this.status = status;
      this.code = code;
    }
  }

  // ---------------------------------------------------------------------
  // The controller: token, REST calls, counts and the live stream

  class Inbox {
    constructor() {
      this.token = null;
      this.counts = null;
      this.cursor = null;
      this.transport = 'idle';
      this.listeners = new Map();
      this.views = [];
      this.kind = 'websocket';
      this.failures = 0;
      this.attempt = 0;
      this.connection = null;
      this.timer = null;
      this.liveRetryAt = 0;
      window.addEventListener('online', () => this.reconnect());
      document.addEventListener('visibilitychange', () => {
        if (document.visibilityState === 'visible' && this.transport === 'polling') this.pollOnce();
      });
    }

    on(event, fn) {
      if (!this.listeners.has(event)) this.listeners.set(event, new Set());
      this.listeners.get(event).add(fn);
      return () => this.listeners.get(event).delete(fn);
    }

    emit(event, detail) {
      for (const fn of this.listeners.get(event) || []) {
        try {
          fn(detail);
        } catch (error) {
          console.error('nudge inbox listener failed', error);
        }
      }
    }

    setToken(token) {
      this.token = token ? String(token) : null;
      if (this.token && this.views.length) {
        this.kind = 'websocket';
        this.failures = 0;
        this.reconnect();
        this.refreshCounts();
        for (const view of this.views) view.reload();
      }
    }

    async request(method, path, body) {
      if (!this.token) throw new ApiError(0, 'no_token', 'Not signed in.');
      const headers = { Authorization: `Bearer ${this.token}` };
      if (body !== undefined) headers['Content-Type'] = 'application/json';
      let response;
      try {
        response = await fetch(API + path, {
          method,
          headers,
          body: body === undefined ? undefined : JSON.stringify(body),
          mode: 'cors',
          credentials: 'omit',
          cache: 'no-store',
        });
      } catch (error) {
        throw new ApiError(0, 'network', 'Cannot reach the notification service.');
      }
      const text = await response.text();
      let json = null;
      try {
        json = text ? JSON.parse(text) : null;
      } catch {
        json = null;
      }
      if (!response.ok) {
        const error = (json && json.error) || {};
        if (response.status === 401) {
          this.emit('unauthorized', error);
          window.dispatchEvent(new CustomEvent('nudge:unauthorized', { detail: error }));
        }
        throw new ApiError(response.status, error.code || 'http_error', error.message || `${response.status} ${response.statusText}`);
      }
      return json;
    }

    setCounts(counts) {
      if (!counts) return;
      this.counts = counts;
      this.emit('counts', counts);
    }

    async refreshCounts() {
      try {
        this.setCounts(await this.request('GET', '/v1/me/notifications/counts'));
      } catch (error) {
        this.emit('error', error);
      }
    }

    /** After an action: the stream brings the new counts; without one, ask. */
    afterAction(counts) {
      if (counts) this.setCounts(counts);
      else if (this.transport !== 'websocket' && this.transport !== 'sse') this.refreshCounts();
    }

    // --- the live stream: WebSocket, else SSE, else polling ------------

    setTransport(transport) {
      if (this.transport === transport) return;
      this.transport = transport;
      this.emit('transport', transport);
    }

    start() {
      if (this.started || !this.token) return;
      this.started = true;
      this.refreshCounts();
      this.connect();
    }

    reconnect() {
      if (!this.started) return this.start();
      this.attempt = 0;
      this.disconnect();
      this.connect();
    }

    disconnect() {
      clearTimeout(this.timer);
      this.timer = null;
      const connection = this.connection;
      this.connection = null;
      if (connection) connection.close();
    }

    /**
     * The stream's URL with a fresh stream ticket (POST /v1/me/stream-ticket,
     * good for a minute): the user's token never goes into a URL, where
     * access logs and proxies would keep it.
     */
    async streamUrl(path, ws) {
      const { ticket } = await this.request('POST', '/v1/me/stream-ticket');
      const url = new URL(API + path);
      if (ws) url.protocol = url.protocol === 'https:' ? 'wss:' : 'ws:';
      url.searchParams.set('ticket', ticket);
      if (this.cursor !== null && this.cursor !== undefined) url.searchParams.set('cursor', String(this.cursor));
      return url.href;
    }

    connect() {
      if (!this.token) return;
      if (this.kind === 'websocket' && 'WebSocket' in window) return this.openWebSocket();
      if (this.kind !== 'polling' && 'EventSource' in window) {
        this.kind = 'sse';
        return this.openEventSource();
      }
      this.kind = 'polling';
      this.startPolling();
    }

    /**
     * A connection that first fetches its ticket, then calls `open(href,
     * connection)`, which returns what `close()` closes. Closed before the
     * ticket arrives, it never opens.
     */
    openLive(path, ws, open) {
      this.setTransport('connecting');
      const connection = {
        hello: false,
        target: null,
        close() {
          if (this.target) this.target.close();
        },
      };
      this.connection = connection;
      this.streamUrl(path, ws).then(
        (href) => {
          if (this.connection !== connection) return;
          connection.target = open(href, connection);
        },
        () => {
          if (this.connection !== connection) return;
          this.connection = null;
          this.lost(connection);
        },
      );
    }

    openWebSocket() {
      this.openLive('/v1/me/stream', true, (href, connection) => {
        const socket = new WebSocket(href);
        socket.onmessage = (event) => this.onFrame(connection, event.data, 'websocket');
        socket.onclose = () => {
          if (this.connection !== connection) return;
          this.connection = null;
          this.lost(connection);
        };
        return socket;
      });
    }

    openEventSource() {
      this.openLive('/v1/me/events', false, (href, connection) => {
        const source = new EventSource(href);
        const onMessage = (event) => this.onFrame(connection, event.data, 'sse');
        source.onmessage = onMessage;
        for (const type of ['hello', 'change', 'reset']) source.addEventListener(type, onMessage);
        source.onerror = () => {
          // EventSource would retry by itself from its first URL; retry here
          // instead, from the last cursor and with a new ticket, with backoff.
          source.close();
          if (this.connection !== connection) return;
          this.connection = null;
          this.lost(connection);
        };
        return source;
      });
    }

    /** A connection ended: retry it, or fall back to the next transport. */
    lost(connection) {
      if (connection.hello) {
        this.failures = 0;
      } else if (++this.failures >= 2) {
        this.failures = 0;
        this.kind = this.kind === 'websocket' ? 'sse' : 'polling';
        this.attempt = 0;
        if (this.kind === 'polling') this.liveRetryAt = Date.now() + 120000;
        return this.connect();
      }
      this.setTransport('reconnecting');
      const delay = Math.min(30000, 1000 * 2 ** this.attempt++);
      this.timer = setTimeout(() => this.connect(), delay / 2 + Math.random() * (delay / 2));
    }

    onFrame(connection, text, transport) {
      if (this.connection !== connection) return;
      let frame;
      try {
        frame = JSON.parse(text);
      } catch {
        return;
      }
      if (frame.type === 'hello') {
        connection.hello = true;
        this.attempt = 0;
        this.failures = 0;
        if (frame.cursor !== undefined) this.cursor = frame.cursor;
        this.setTransport(transport);
        this.setCounts(frame.counts);
      } else if (frame.type === 'change') {
        if (frame.seq !== undefined) this.cursor = frame.seq;
        this.setCounts(frame.counts);
        this.emit('change', frame);
        if (frame.kind === 'added' && frame.item) {
          this.announce(`New notification: ${frame.item.title || humanise(frame.item.type || '')}`);
          this.emit('notification', frame.item);
        }
      } else if (frame.type === 'reset') {
        if (frame.cursor !== undefined) this.cursor = frame.cursor;
        if (frame.counts) this.setCounts(frame.counts);
        else this.refreshCounts();
        this.emit('reset', frame);
      }
    }

    startPolling() {
      this.setTransport('polling');
      const connection = { hello: true, close: () => clearTimeout(this.timer) };
      this.connection = connection;
      const tick = async () => {
        if (this.connection !== connection) return;
        if (Date.now() >= this.liveRetryAt) {
          // Now and then, try to go live again.
          this.connection = null;
          this.kind = 'websocket';
          return this.connect();
        }
        await this.pollOnce();
        if (this.connection === connection) this.timer = setTimeout(tick, POLL_MS);
      };
      this.pollOnce();
      this.timer = setTimeout(tick, POLL_MS);
    }

    async pollOnce() {
      const before = this.counts;
      await this.refreshCounts();
      const after = this.counts;
      if (before && after && (before.total !== after.total || before.unread !== after.unread || before.unseen !== after.unseen)) {
        this.emit('reset', { type: 'reset', polled: true });
      }
    }

    /** Says `text` through the first mounted view's live region. */
    announce(text) {
      const view = this.views.find((v) => v.live);
      if (!view) return;
      view.live.textContent = '';
      setTimeout(() => {
        view.live.textContent = text;
      }, 50);
    }

    mount(target, options) {
      const element = typeof target === 'string' ? document.querySelector(target) : target;
      if (!element) throw new Error(`Nudge inbox: no element ${target}`);
      const kind = (options && options.view) || 'bell';
      const View = { bell: Bell, inbox: InboxView, preferences: PreferencesView }[kind];
      if (!View) throw new Error(`Nudge inbox: unknown view ${kind}`);
      const view = new View(this, shell(element, kind));
      this.views.push(view);
      this.start();
      view.reload();
      return view;
    }
  }

  /** A Shadow DOM on a host element in `element`, with the stylesheet and a live region. */
  function shell(element, kind) {
    const host = h('div', { class: `nudge-host nudge-host-${kind}` });
    host.style.visibility = 'hidden';
    element.append(host);
    const root = host.attachShadow({ mode: 'open' });
    const show = () => {
      host.style.visibility = '';
    };
    const link = h('link', { rel: 'stylesheet', href: STYLESHEET, onload: show, onerror: show });
    setTimeout(show, 3000);
    const live = h('div', { class: 'nudge-sr-only', role: 'status', 'aria-live': 'polite', 'aria-atomic': 'true' });
    const body = h('div', { class: `nudge-root nudge-view-${kind}` });
    root.append(link, body, live);
    return { host, root, body, live };
  }

  /** One notification as a focusable list item. */
  function itemNode(item, extra) {
    const unread = !item.read_at;
    const li = h(
      'li',
      {
        class: `nudge-item${unread ? ' nudge-unread' : ''}${item.archived_at ? ' nudge-archived' : ''}`,
        tabindex: '0',
        'data-id': item.id,
      },
      h('span', { class: 'nudge-dot', 'aria-hidden': 'true' }),
      h(
        'div',
        { class: 'nudge-item-main' },
        h('span', { class: 'nudge-sr-only', text: unread ? 'Unread: ' : '' }),
        h('strong', { class: 'nudge-item-title', text: item.title || humanise(item.type || 'Notification') }),
        item.body ? h('p', { class: 'nudge-item-body', text: item.body }) : null,
        h(
          'p',
          { class: 'nudge-item-meta' },
          h('time', { datetime: item.created_at, title: new Date(item.created_at).toLocaleString(), text: timeText(item.created_at) }),
          item.category ? h('span', { class: 'nudge-chip', text: humanise(item.category) }) : null,
          item.archived_at ? h('span', { class: 'nudge-chip', text: 'Archived' }) : null,
          item.snoozed_until ? h('span', { class: 'nudge-chip', title: new Date(item.snoozed_until).toLocaleString(), text: `Snoozed until ${snoozeText(item.snoozed_until)}` }) : null,
        ),
      ),
      extra || null,
    );
    return li;
  }

  function message(root) {
    const status = h('p', { class: 'nudge-status', role: 'status' });
    const alert = h('p', { class: 'nudge-error', role: 'alert' });
    root.append(status, alert);
    return {
      ok(text) {
        alert.textContent = '';
        status.textContent = text;
      },
      fail(error) {
        status.textContent = '';
        alert.textContent = error instanceof Error ? error.message : String(error);
      },
      clear() {
        status.textContent = '';
        alert.textContent = '';
      },
    };
  }

  // ---------------------------------------------------------------------
  // The bell and its dropdown

  class Bell {
    constructor(inbox, shellParts) {
      this.inbox = inbox;
      this.host = shellParts.host;
      this.root = shellParts.root;
      this.live = shellParts.live;
      this.items = [];
      this.isOpen = false;
      const panelId = uid('panel');
      const titleId = uid('title');

      this.badge = h('span', { class: 'nudge-badge', 'aria-hidden': 'true', hidden: true });
      this.button = h(
        'button',
        {
          type: 'button',
          class: 'nudge-bell',
          'aria-haspopup': 'true',
          'aria-expanded': 'false',
          'aria-controls': panelId,
          'aria-label': 'Notifications',
          onclick: () => (this.isOpen ? this.close(true) : this.open()),
          onkeydown: (e) => {
            if (e.key === 'Escape' && this.isOpen) {
              e.preventDefault();
              this.close(true);
            }
          },
        },
        bellIcon(),
        this.badge,
      );
      this.list = h('ul', { class: 'nudge-list', 'aria-labelledby': titleId, onkeydown: (e) => this.onListKey(e) });
      this.empty = h('p', { class: 'nudge-empty', text: 'No notifications yet.', hidden: true });
      this.markAll = h('button', { type: 'button', class: 'nudge-link-button', text: 'Mark all read', onclick: () => this.markAllRead() });
      const footer = h('div', { class: 'nudge-panel-footer' });
      if (INBOX_URL !== 'none') {
        this.viewAll = h('a', { class: 'nudge-link', href: INBOX_URL, text: 'View all notifications' });
        this.viewAll.addEventListener('click', () => {
          // Hand the token to the inbox page in the fragment (never sent to a server).
          if (sameServer(INBOX_URL) && this.inbox.token) this.viewAll.href = `${INBOX_URL}#access_token=${encodeURIComponent(this.inbox.token)}`;
        });
        footer.append(this.viewAll);
      }
      this.panel = h(
        'div',
        {
          class: 'nudge-panel',
          id: panelId,
          role: 'dialog',
          'aria-labelledby': titleId,
          hidden: true,
          onkeydown: (e) => {
            if (e.key === 'Escape') {
              e.preventDefault();
              e.stopPropagation();
              this.close(true);
            }
          },
        },
        h('div', { class: 'nudge-panel-header' }, h('h2', { id: titleId, class: 'nudge-panel-title', tabindex: '-1', text: 'Notifications' }), this.markAll),
        this.list,
        this.empty,
        footer,
      );
      this.msg = message(this.panel);
      shellParts.body.append(this.button, this.panel);

      document.addEventListener('pointerdown', (e) => {
        if (this.isOpen && !e.composedPath().includes(this.host)) this.close(false);
      });
      inbox.on('counts', (counts) => this.renderCounts(counts));
      inbox.on('change', (change) => this.onChange(change));
      inbox.on('reset', () => {
        if (this.isOpen) this.load();
      });
      inbox.on('transport', (t) => this.host.setAttribute('data-transport', t));
      this.renderCounts(inbox.counts);
    }

    reload() {
      if (this.isOpen) this.load();
    }

    renderCounts(counts) {
      const unread = counts ? counts.unread : 0;
      this.badge.textContent = unread > 99 ? '99+' : String(unread);
      this.badge.hidden = !unread;
      this.button.setAttribute('aria-label', unread ? `Notifications, ${unread} unread` : 'Notifications, no unread');
      this.host.setAttribute('data-unread', String(unread));
      this.markAll.disabled = !unread;
    }

    async open() {
      this.isOpen = true;
      this.panel.hidden = false;
      this.button.setAttribute('aria-expanded', 'true');
      this.place();
      this.panel.querySelector('.nudge-panel-title').focus();
      await this.load();
      if (!this.isOpen) return;
      const first = this.list.querySelector('.nudge-item');
      if (first && this.root.activeElement === this.panel.querySelector('.nudge-panel-title')) first.focus();
      this.markSeen();
    }

    /** Opens towards the side with room: right-aligned under the bell, else left-aligned. */
    place() {
      this.panel.classList.remove('nudge-align-left');
      if (this.panel.getBoundingClientRect().left < 0) this.panel.classList.add('nudge-align-left');
    }

    close(returnFocus) {
      if (!this.isOpen) return;
      this.isOpen = false;
      this.panel.hidden = true;
      this.button.setAttribute('aria-expanded', 'false');
      if (returnFocus) this.button.focus();
    }

    async load() {
      try {
        const page = await this.inbox.request('GET', `/v1/me/notifications?limit=${DROPDOWN_LIMIT}`);
        this.items = page.items || [];
        this.render();
        this.msg.clear();
      } catch (error) {
        this.msg.fail(error);
      }
    }

    render() {
      const focusedId = this.root.activeElement && this.root.activeElement.getAttribute('data-id');
      this.list.replaceChildren(...this.items.map((item) => this.node(item)));
      this.empty.hidden = this.items.length > 0;
      if (focusedId) {
        const again = this.list.querySelector(`[data-id="${CSS.escape(focusedId)}"]`);
        if (again) again.focus();
      }
    }

    node(item) {
      const li = itemNode(item);
      li.addEventListener('click', () => this.activate(item.id));
      li.addEventListener('keydown', (e) => {
        if (e.key === 'Enter' || e.key === ' ') {
          e.preventDefault();
          this.activate(item.id);
        }
      });
      return li;
    }

    async markSeen() {
      const ids = this.items.filter((item) => !item.seen_at && !item.read_at).map((item) => item.id);
      if (!ids.length) return;
      try {
        await this.inbox.request('POST', '/v1/me/notifications/bulk', { ids, action: 'seen' });
        this.inbox.afterAction();
      } catch (error) {
        this.msg.fail(error);
      }
    }

    async activate(id) {
      const item = this.items.find((i) => i.id === id);
      if (!item) return;
      const target = safeUrl(item.data && item.data.url);
      try {
        if (!item.read_at) {
          const updated = await this.inbox.request('POST', `/v1/me/notifications/${encodeURIComponent(id)}/read`);
          this.replace(updated);
          this.inbox.afterAction();
        }
        if (target) location.assign(target);
      } catch (error) {
        this.msg.fail(error);
      }
    }

    replace(updated) {
      if (!updated) return;
      const index = this.items.findIndex((i) => i.id === updated.id);
      if (index >= 0) {
        this.items[index] = updated;
        this.render();
      }
    }

    async markAllRead() {
      try {
        const answer = await this.inbox.request('POST', '/v1/me/notifications/read-all', {});
        this.inbox.afterAction(answer && answer.counts);
        await this.load();
        this.msg.ok('All notifications marked read.');
      } catch (error) {
        this.msg.fail(error);
      }
    }

    onChange(change) {
      if (!this.isOpen) return;
      if (change.kind === 'added' && change.item) {
        if (!change.item.archived_at && !this.items.some((i) => i.id === change.item.id)) {
          this.items = [change.item, ...this.items].slice(0, DROPDOWN_LIMIT);
          this.render();
          this.markSeen();
        }
      } else if (change.kind === 'updated' && change.item) {
        const item = change.item;
        if (item.archived_at || item.snoozed_until) {
          this.items = this.items.filter((i) => i.id !== item.id);
          this.render();
        } else if (this.items.some((i) => i.id === item.id)) {
          this.replace(item);
        } else {
          // Back from a snooze: in its place by time, if that is among
          // the newest the dropdown shows.
          this.items = insertByTime(this.items, item, this.items.length < DROPDOWN_LIMIT).slice(0, DROPDOWN_LIMIT);
          this.render();
        }
      } else if (change.kind === 'deleted') {
        this.items = this.items.filter((i) => i.id !== change.id);
        this.render();
      }
    }

    onListKey(e) {
      const items = [...this.list.querySelectorAll('.nudge-item')];
      if (!items.length) return;
      const index = items.indexOf(this.root.activeElement);
      let next = null;
      if (e.key === 'ArrowDown') next = items[Math.min(index + 1, items.length - 1)];
      else if (e.key === 'ArrowUp') next = items[Math.max(index - 1, 0)];
      else if (e.key === 'Home') next = items[0];
      else if (e.key === 'End') next = items[items.length - 1];
      if (next) {
        e.preventDefault();
        next.focus();
      }
    }
  }

  function sameServer(url) {
    try {
      return new URL(url, location.href).origin === new URL(API).origin;
    } catch {
      return false;
    }
  }

  function bellIcon() {
    const ns = 'http://www.w3.org/2000/svg';
    const svg = document.createElementNS(ns, 'svg');
    svg.setAttribute('viewBox', '0 0 24 24');
    svg.setAttribute('aria-hidden', 'true');
    svg.setAttribute('focusable', 'false');
    svg.setAttribute('class', 'nudge-bell-icon');
    const path = document.createElementNS(ns, 'path');
    path.setAttribute('d', 'M12 22a2.5 2.5 0 0 0 2.45-2h-4.9A2.5 2.5 0 0 0 12 22zm7-6V11a7 7 0 0 0-5.5-6.84V3.5a1.5 1.5 0 0 0-3 0v.66A7 7 0 0 0 5 11v5l-2 2v1h18v-1l-2-2z');
    svg.append(path);
    return svg;
  }

  // ---------------------------------------------------------------------
  // The full inbox

  class InboxView {
    constructor(inbox, shellParts) {
      this.inbox = inbox;
      this.root = shellParts.root;
      this.live = shellParts.live;
      this.filter = { category: null, read: '', archived: false, snoozed: false, q: '', sort: 'newest' };
      this.items = [];
      this.cursor = null;
      this.selected = new Set();
      this.loading = false;
      const body = shellParts.body;

      const headingId = uid('heading');
      const header = h(
        'header',
        { class: 'nudge-page-header' },
        h('h1', { id: headingId, text: 'Notifications' }),
        h(
          'div',
          { class: 'nudge-actions' },
          h('button', { type: 'button', class: 'nudge-button', text: 'Mark all read', onclick: () => this.markAllRead() }),
          PREFERENCES_URL !== 'none' ? this.preferencesLink() : null,
        ),
      );
      this.tabs = h('div', { class: 'nudge-tabs', role: 'tablist', 'aria-label': 'Categories', onkeydown: (e) => this.onTabKey(e) });

      const searchId = uid('search');
      const readId = uid('read');
      const sortId = uid('sort');
      const archivedId = uid('archived');
      const snoozedId = uid('snoozed');
      this.search = h('input', { id: searchId, type: 'search', class: 'nudge-input', placeholder: 'Search notifications', autocomplete: 'off' });
      let debounce = null;
      this.search.addEventListener('input', () => {
        clearTimeout(debounce);
        debounce = setTimeout(() => this.setFilter({ q: this.search.value.trim() }), 300);
      });
      this.readSelect = h(
        'select',
        { id: readId, class: 'nudge-input', onchange: () => this.setFilter({ read: this.readSelect.value }) },
        h('option', { value: '', text: 'All' }),
        h('option', { value: 'false', text: 'Unread' }),
        h('option', { value: 'true', text: 'Read' }),
      );
      this.sortSelect = h(
        'select',
        { id: sortId, class: 'nudge-input', onchange: () => this.setFilter({ sort: this.sortSelect.value }) },
        h('option', { value: 'newest', text: 'Newest first' }),
        h('option', { value: 'oldest', text: 'Oldest first' }),
        h('option', { value: 'unread_first', text: 'Unread first' }),
      );
      this.archivedBox = h('input', { id: archivedId, type: 'checkbox', onchange: () => this.setFilter({ archived: this.archivedBox.checked }) });
      this.snoozedBox = h('input', { id: snoozedId, type: 'checkbox', onchange: () => this.setFilter({ snoozed: this.snoozedBox.checked }) });
      const toolbar = h(
        'div',
        { class: 'nudge-toolbar', role: 'search' },
        h('div', { class: 'nudge-field nudge-field-grow' }, h('label', { for: searchId, text: 'Search' }), this.search),
        h('div', { class: 'nudge-field' }, h('label', { for: readId, text: 'Show' }), this.readSelect),
        h('div', { class: 'nudge-field' }, h('label', { for: sortId, text: 'Sort' }), this.sortSelect),
        h('div', { class: 'nudge-field nudge-check' }, this.archivedBox, h('label', { for: archivedId, text: 'Archived only' })),
        h('div', { class: 'nudge-field nudge-check' }, this.snoozedBox, h('label', { for: snoozedId, text: 'Snoozed only' })),
      );

      const allId = uid('all');
      this.selectAll = h('input', { id: allId, type: 'checkbox', onchange: () => this.toggleAll(this.selectAll.checked) });
      this.selectedText = h('span', { class: 'nudge-selected', text: '' });
      this.bulkButtons = [
        h('button', { type: 'button', class: 'nudge-button', text: 'Mark read', onclick: () => this.bulk('read') }),
        h('button', { type: 'button', class: 'nudge-button', text: 'Mark unread', onclick: () => this.bulk('unread') }),
        (this.archiveButton = h('button', { type: 'button', class: 'nudge-button', text: 'Archive', onclick: () => this.bulk(this.filter.archived ? 'unarchive' : 'archive') })),
        h('button', { type: 'button', class: 'nudge-button nudge-danger', text: 'Delete', onclick: () => this.bulk('delete') }),
      ];
      const bulkBar = h(
        'div',
        { class: 'nudge-bulk', role: 'group', 'aria-label': 'Selected notifications' },
        h('div', { class: 'nudge-field nudge-check' }, this.selectAll, h('label', { for: allId, text: 'Select all shown' })),
        this.selectedText,
        ...this.bulkButtons,
      );
      this.newBanner = h('button', { type: 'button', class: 'nudge-banner', hidden: true, onclick: () => this.reload() });
      this.list = h('ul', { class: 'nudge-list nudge-list-full', 'aria-labelledby': headingId, onkeydown: (e) => this.onListKey(e) });
      this.empty = h('p', { class: 'nudge-empty', text: 'Nothing here.', hidden: true });
      this.more = h('button', { type: 'button', class: 'nudge-button nudge-more', text: 'Load more', hidden: true, onclick: () => this.loadMore() });
      body.append(header, this.tabs, toolbar, bulkBar, this.newBanner, this.list, this.empty, this.more);
      this.msg = message(body);
      this.updateSelection();

      if ('IntersectionObserver' in window) {
        new IntersectionObserver((entries) => {
          if (entries.some((e) => e.isIntersecting) && !this.more.hidden) this.loadMore();
        }).observe(this.more);
      }
      inbox.on('counts', (counts) => this.renderTabs(counts));
      inbox.on('change', (change) => this.onChange(change));
      inbox.on('reset', () => this.reload());
      this.renderTabs(inbox.counts);
    }

    preferencesLink() {
      const link = h('a', { class: 'nudge-button', href: PREFERENCES_URL, text: 'Preferences' });
      link.addEventListener('click', () => {
        if (sameServer(PREFERENCES_URL) && this.inbox.token) link.href = `${PREFERENCES_URL}#access_token=${encodeURIComponent(this.inbox.token)}`;
      });
      return link;
    }

    query(cursor) {
      const params = new URLSearchParams({ limit: String(PAGE_SIZE), sort: this.filter.sort });
      if (this.filter.category) params.set('category', this.filter.category);
      if (this.filter.read) params.set('read', this.filter.read);
      if (this.filter.archived) params.set('archived', 'true');
      if (this.filter.snoozed) params.set('snoozed', 'true');
      if (this.filter.q) params.set('q', this.filter.q);
      if (cursor) params.set('cursor', cursor);
      return `/v1/me/notifications?${params}`;
    }

    setFilter(change) {
      Object.assign(this.filter, change);
      this.archiveButton.textContent = this.filter.archived ? 'Unarchive' : 'Archive';
      this.reload();
    }

    async reload() {
      this.newBanner.hidden = true;
      this.selected.clear();
      this.loading = true;
      try {
        const page = await this.inbox.request('GET', this.query(null));
        this.items = page.items || [];
        this.cursor = page.next_cursor || null;
        this.render();
        this.msg.clear();
      } catch (error) {
        this.msg.fail(error);
      } finally {
        this.loading = false;
      }
    }

    async loadMore() {
      if (this.loading || !this.cursor) return;
      this.loading = true;
      try {
        const page = await this.inbox.request('GET', this.query(this.cursor));
        const known = new Set(this.items.map((i) => i.id));
        const fresh = (page.items || []).filter((i) => !known.has(i.id));
        this.items.push(...fresh);
        this.cursor = page.next_cursor || null;
        this.list.append(...fresh.map((item) => this.node(item)));
        this.updatePaging();
        this.updateSelection();
      } catch (error) {
        this.msg.fail(error);
      } finally {
        this.loading = false;
      }
    }

    // A page may come back empty with a cursor: the server stops a scan
    // after a fixed budget of rows (a filter matching nothing in a long
    // history), so "Nothing here." is only true once no cursor is left.
    updatePaging() {
      this.empty.hidden = this.items.length > 0 || !!this.cursor;
      this.more.hidden = !this.cursor;
    }

    render() {
      const focusedId = this.root.activeElement && this.root.activeElement.closest && this.root.activeElement.closest('.nudge-item');
      const keep = focusedId ? focusedId.getAttribute('data-id') : null;
      this.list.replaceChildren(...this.items.map((item) => this.node(item)));
      this.updatePaging();
      for (const id of [...this.selected]) if (!this.items.some((i) => i.id === id)) this.selected.delete(id);
      this.updateSelection();
      if (keep) {
        const again = this.list.querySelector(`[data-id="${CSS.escape(keep)}"]`);
        if (again) again.focus();
      }
    }

    node(item) {
      const boxId = uid('select');
      const label = item.title || humanise(item.type || 'notification');
      const box = h('input', {
        id: boxId,
        type: 'checkbox',
        class: 'nudge-item-select',
        checked: this.selected.has(item.id),
        onchange: (e) => {
          if (e.target.checked) this.selected.add(item.id);
          else this.selected.delete(item.id);
          this.updateSelection();
        },
      });
      const unread = !item.read_at;
      const actions = h(
        'div',
        { class: 'nudge-item-actions' },
        h('button', { type: 'button', class: 'nudge-link-button', text: unread ? 'Mark read' : 'Mark unread', 'aria-label': `${unread ? 'Mark read' : 'Mark unread'}: ${label}`, onclick: () => this.act(item.id, unread ? 'read' : 'unread') }),
        h('button', { type: 'button', class: 'nudge-link-button', text: item.archived_at ? 'Unarchive' : 'Archive', 'aria-label': `${item.archived_at ? 'Unarchive' : 'Archive'}: ${label}`, onclick: () => this.act(item.id, item.archived_at ? 'unarchive' : 'archive') }),
        item.snoozed_until
          ? h('button', { type: 'button', class: 'nudge-link-button', text: 'Unsnooze', 'aria-label': `Unsnooze: ${label}`, onclick: () => this.act(item.id, 'unsnooze') })
          : this.snoozeMenu(item.id, label),
        h('button', { type: 'button', class: 'nudge-link-button nudge-danger', text: 'Delete', 'aria-label': `Delete: ${label}`, onclick: () => this.act(item.id, 'delete') }),
      );
      const li = itemNode(item, actions);
      li.prepend(h('span', { class: 'nudge-item-check' }, box, h('label', { for: boxId, class: 'nudge-sr-only', text: `Select ${label}` })));
      li.addEventListener('keydown', (e) => {
        if (e.target !== li) return;
        if (e.key === 'Enter') {
          e.preventDefault();
          this.open(item);
        } else if (e.key === ' ') {
          e.preventDefault();
          box.click();
        }
      });
      li.addEventListener('click', (e) => {
        if (e.target.closest('button, input, label, a')) return;
        this.open(item);
      });
      return li;
    }

    /**
     * A "Snooze" button that opens the choices of [`snoozeChoices`] beside
     * it. The choices are made when it opens: their times are from that
     * moment (a page left open for hours must not snooze to a time already
     * past), and a long list does not pay for them per item.
     */
    snoozeMenu(id, label) {
      const menuId = uid('snooze');
      const menu = h('span', { id: menuId, class: 'nudge-snooze-menu', role: 'group', 'aria-label': `Snooze ${label}`, hidden: true });
      const toggle = h('button', {
        type: 'button',
        class: 'nudge-link-button',
        text: 'Snooze',
        'aria-label': `Snooze: ${label}`,
        'aria-expanded': 'false',
        'aria-controls': menuId,
        onclick: () => {
          if (menu.hidden) {
            menu.replaceChildren(
              ...snoozeChoices().map((choice) =>
                h('button', { type: 'button', class: 'nudge-link-button', text: choice.label, title: choice.until.toLocaleString(), onclick: () => this.snooze(id, choice.until) }),
              ),
            );
          }
          menu.hidden = !menu.hidden;
          toggle.setAttribute('aria-expanded', String(!menu.hidden));
          if (!menu.hidden) menu.querySelector('button').focus();
        },
      });
      menu.addEventListener('keydown', (e) => {
        if (e.key !== 'Escape') return;
        e.stopPropagation();
        menu.hidden = true;
        toggle.setAttribute('aria-expanded', 'false');
        toggle.focus();
      });
      return h('span', { class: 'nudge-snooze' }, toggle, menu);
    }

    async snooze(id, until) {
      try {
        await this.inbox.request('POST', `/v1/me/notifications/${encodeURIComponent(id)}/snooze`, { until: until.toISOString() });
        if (!this.filter.snoozed) this.drop([id]);
        this.inbox.afterAction();
        this.msg.ok(`Snoozed until ${snoozeText(until.toISOString())}.`);
      } catch (error) {
        this.msg.fail(error);
      }
    }

    async open(item) {
      const target = safeUrl(item.data && item.data.url);
      if (!item.read_at) await this.act(item.id, 'read');
      if (target) location.assign(target);
    }

    async act(id, action) {
      try {
        if (action === 'delete') {
          await this.inbox.request('DELETE', `/v1/me/notifications/${encodeURIComponent(id)}`);
          this.drop([id]);
          this.msg.ok('Notification deleted.');
        } else {
          const updated = await this.inbox.request('POST', `/v1/me/notifications/${encodeURIComponent(id)}/${action}`);
          if ((action === 'archive' && !this.filter.archived) || (action === 'unarchive' && this.filter.archived) || (action === 'unsnooze' && this.filter.snoozed)) this.drop([id]);
          else this.replace(updated);
        }
        this.inbox.afterAction();
      } catch (error) {
        this.msg.fail(error);
      }
    }

    async bulk(action) {
      const ids = [...this.selected];
      if (!ids.length) return;
      try {
        const answer = await this.inbox.request('POST', '/v1/me/notifications/bulk', { ids, action });
        const changed = (answer && answer.changed) || [];
        const verb = { read: 'marked read', unread: 'marked unread', archive: 'archived', unarchive: 'unarchived', delete: 'deleted' }[action];
        this.selected.clear();
        if (action === 'delete' || action === 'archive' || action === 'unarchive') {
          this.drop(ids);
        } else {
          await this.reload();
        }
        this.msg.ok(`${changed.length} ${changed.length === 1 ? 'notification' : 'notifications'} ${verb}.`);
        this.inbox.afterAction();
      } catch (error) {
        this.msg.fail(error);
      }
    }

    async markAllRead() {
      try {
        const body = this.filter.category ? { category: this.filter.category } : {};
        const answer = await this.inbox.request('POST', '/v1/me/notifications/read-all', body);
        this.inbox.afterAction(answer && answer.counts);
        await this.reload();
        this.msg.ok(`${answer.marked} marked read.`);
      } catch (error) {
        this.msg.fail(error);
      }
    }

    drop(ids) {
      const gone = new Set(ids);
      this.items = this.items.filter((i) => !gone.has(i.id));
      for (const id of ids) this.selected.delete(id);
      this.render();
    }

    replace(updated) {
      if (!updated) return;
      const index = this.items.findIndex((i) => i.id === updated.id);
      if (index < 0) return;
      this.items[index] = updated;
      this.render();
    }

    toggleAll(on) {
      this.selected = new Set(on ? this.items.map((i) => i.id) : []);
      for (const box of this.list.querySelectorAll('.nudge-item-select')) box.checked = on;
      this.updateSelection();
    }

    updateSelection() {
      const n = this.selected.size;
      this.selectedText.textContent = n ? `${n} selected` : 'None selected';
      for (const button of this.bulkButtons) button.disabled = !n;
      this.selectAll.checked = n > 0 && n === this.items.length;
      this.selectAll.indeterminate = n > 0 && n < this.items.length;
    }

    renderTabs(counts) {
      const categories = Object.entries((counts && counts.categories) || {}).sort(([a], [b]) => a.localeCompare(b));
      const tabs = [[null, counts ? { unread: counts.unread, total: counts.total } : null], ...categories];
      const active = this.filter.category;
      if (active && !categories.some(([name]) => name === active)) tabs.push([active, { unread: 0, total: 0 }]);
      this.tabs.replaceChildren(
        ...tabs.map(([name, c]) => {
          const label = name === null ? 'All' : humanise(name);
          const selected = name === active;
          return h(
            'button',
            {
              type: 'button',
              role: 'tab',
              class: 'nudge-tab',
              'aria-selected': selected ? 'true' : 'false',
              tabindex: selected ? '0' : '-1',
              'data-category': name === null ? '' : name,
              'aria-label': c ? `${label}: ${c.unread} unread of ${c.total}` : label,
              onclick: () => {
                this.filter.category = name;
                this.renderTabs(this.inbox.counts);
                this.reload();
              },
            },
            label,
            c && c.unread ? h('span', { class: 'nudge-count', 'aria-hidden': 'true', text: String(c.unread) }) : null,
          );
        }),
      );
    }

    onTabKey(e) {
      const tabs = [...this.tabs.querySelectorAll('[role="tab"]')];
      const index = tabs.indexOf(this.root.activeElement);
      if (index < 0) return;
      let next = null;
      if (e.key === 'ArrowRight') next = tabs[(index + 1) % tabs.length];
      else if (e.key === 'ArrowLeft') next = tabs[(index - 1 + tabs.length) % tabs.length];
      if (next) {
        e.preventDefault();
        next.focus();
        next.click();
        const again = this.tabs.querySelector(`[data-category="${CSS.escape(next.getAttribute('data-category'))}"]`);
        if (again) again.focus();
      }
    }

    onListKey(e) {
      if (e.key !== 'ArrowDown' && e.key !== 'ArrowUp') return;
      const items = [...this.list.querySelectorAll('.nudge-item')];
      const current = this.root.activeElement && this.root.activeElement.closest('.nudge-item');
      const index = items.indexOf(current);
      const next = e.key === 'ArrowDown' ? items[index + 1] : items[index - 1];
      if (next) {
        e.preventDefault();
        next.focus();
      }
    }

    onChange(change) {
      if (change.kind === 'added' && change.item) {
        const f = this.filter;
        const plain = !f.q && f.sort === 'newest' && !f.archived && !f.snoozed && f.read !== 'true' && (!f.category || f.category === change.item.category);
        if (plain) {
          if (!this.items.some((i) => i.id === change.item.id)) {
            this.items.unshift(change.item);
            // One new node, not a new list: rebuilding the whole list per
            // live item froze the page for minutes under a burst (a few
            // thousand notifications at once, as a broadcast sends).
            this.list.prepend(this.node(change.item));
            this.updatePaging();
            this.updateSelection();
          }
        } else {
          this.newBanner.textContent = 'New notifications: show them';
          this.newBanner.hidden = false;
        }
      } else if (change.kind === 'updated' && change.item) {
        const item = change.item;
        const shown = this.items.some((i) => i.id === item.id);
        if (!snoozedAs(item, this.filter.snoozed)) {
          // Snoozed (or back) in another tab or by the server: it leaves
          // this view.
          if (shown) this.drop([item.id]);
        } else if (shown) {
          this.replace(item);
        } else if (!this.filter.snoozed) {
          // Back from a snooze. In its place by time when the view is the
          // plain newest-first list; otherwise the list would have to be
          // filtered again here, so offer a reload.
          const f = this.filter;
          const plain = !f.q && f.sort === 'newest' && !f.archived && f.read !== 'true' && !item.archived_at && (!f.category || f.category === item.category);
          if (plain) {
            this.items = insertByTime(this.items, item, !this.cursor);
            this.render();
          } else {
            this.newBanner.textContent = 'Snoozed notifications are back: show them';
            this.newBanner.hidden = false;
          }
        }
      } else if (change.kind === 'deleted') {
        if (this.items.some((i) => i.id === change.id)) this.drop([change.id]);
      }
    }
  }

  // ---------------------------------------------------------------------
  // Preferences

  class PreferencesView {
    constructor(inbox, shellParts) {
      this.inbox = inbox;
      this.body = shellParts.body;
      this.schema = null;
      this.draft = null;
      // Its own loads and failures: the form works without it, and it
      // without the form.
      this.topics = new TopicsSection(inbox);
    }

    async reload() {
      this.body.replaceChildren(h('h1', { text: 'Notification preferences' }), h('p', { class: 'nudge-status', role: 'status', text: 'Loading…' }));
      this.topics.load();
      try {
        const [schema, prefs] = await Promise.all([
          this.inbox.request('GET', '/v1/me/preferences/schema'),
          this.inbox.request('GET', '/v1/me/preferences'),
        ]);
        this.schema = schema;
        this.draft = normalise(prefs);
        this.render();
      } catch (error) {
        this.body.replaceChildren(h('h1', { text: 'Notification preferences' }));
        message(this.body).fail(error);
        this.body.append(this.topics.element);
      }
    }

    globalOn(channel) {
      return this.draft.channels[channel] !== false;
    }

    typeChannelOn(type, channel) {
      if (type.critical) return true;
      const own = this.draft.types[type.name] && this.draft.types[type.name].channels[channel];
      return own === undefined ? this.globalOn(channel) : own;
    }

    setTypeChannel(type, channel, on) {
      const entry = (this.draft.types[type.name] = this.draft.types[type.name] || { channels: {} });
      if (on === this.globalOn(channel)) delete entry.channels[channel];
      else entry.channels[channel] = on;
    }

    render() {
      const schema = this.schema;
      const form = h('form', { class: 'nudge-form', novalidate: true });
      form.addEventListener('submit', (e) => {
        e.preventDefault();
        this.save();
      });
      const header = h(
        'header',
        { class: 'nudge-page-header' },
        h('h1', { text: 'Notification preferences' }),
        INBOX_URL !== 'none' && this.body.closest ? this.inboxLink() : null,
      );

      // Global channel switches.
      const globals = h('fieldset', { class: 'nudge-fieldset' }, h('legend', { text: 'Channels' }), h('p', { class: 'nudge-hint', text: 'Switch a channel off for every notification. Required notifications still arrive.' }));
      for (const channel of schema.channels) {
        const id = uid('global');
        globals.append(
          h(
            'div',
            { class: 'nudge-field nudge-check' },
            h('input', {
              id,
              type: 'checkbox',
              class: 'nudge-switch',
              'data-global': channel,
              checked: this.globalOn(channel),
              onchange: (e) => {
                if (e.target.checked) delete this.draft.channels[channel];
                else this.draft.channels[channel] = false;
                this.syncTypeBoxes();
              },
            }),
            h('label', { for: id, text: channelName(channel) }),
          ),
        );
      }

      // Per type, grouped by category.
      const groups = new Map();
      for (const type of schema.types) {
        const key = type.category || '';
        if (!groups.has(key)) groups.set(key, []);
        groups.get(key).push(type);
      }
      const typeSets = [];
      for (const [category, types] of [...groups].sort(([a], [b]) => (a || '~').localeCompare(b || '~'))) {
        const set = h('fieldset', { class: 'nudge-fieldset' }, h('legend', { text: category ? humanise(category) : 'Other' }));
        for (const type of types) set.append(this.typeRow(type, schema));
        typeSets.push(set);
      }
      if (!schema.types.length) typeSets.push(h('p', { class: 'nudge-hint', text: 'There are no notification types to configure.' }));

      // Quiet hours and time zone.
      const quiet = this.draft.quiet_hours;
      const zones = timeZones();
      const current = (quiet && quiet.timezone) || this.draft.timezone || Intl.DateTimeFormat().resolvedOptions().timeZone || 'UTC';
      if (!zones.includes(current)) zones.unshift(current);
      const ids = { on: uid('quiet'), start: uid('start'), end: uid('end'), tz: uid('tz') };
      this.quietOn = h('input', { id: ids.on, type: 'checkbox', checked: !!quiet, onchange: () => this.syncQuiet() });
      this.quietStart = h('input', { id: ids.start, type: 'time', class: 'nudge-input', value: quiet ? quiet.start : '22:00', required: true });
      this.quietEnd = h('input', { id: ids.end, type: 'time', class: 'nudge-input', value: quiet ? quiet.end : '07:00', required: true });
      this.zone = h('select', { id: ids.tz, class: 'nudge-input' }, zones.map((z) => h('option', { value: z, text: z.replace(/_/g, ' ') })));
      this.zone.value = current;
      const quietSet = h(
        'fieldset',
        { class: 'nudge-fieldset' },
        h('legend', { text: 'Quiet hours' }),
        h('p', { class: 'nudge-hint', text: 'Notifications that arrive in this window wait until it ends. Required notifications are never held.' }),
        h('div', { class: 'nudge-field nudge-check' }, this.quietOn, h('label', { for: ids.on, text: 'Hold notifications during quiet hours' })),
        h(
          'div',
          { class: 'nudge-row' },
          h('div', { class: 'nudge-field' }, h('label', { for: ids.start, text: 'From' }), this.quietStart),
          h('div', { class: 'nudge-field' }, h('label', { for: ids.end, text: 'Until' }), this.quietEnd),
          h('div', { class: 'nudge-field nudge-field-grow' }, h('label', { for: ids.tz, text: 'Time zone' }), this.zone),
        ),
      );

      this.saveButton = h('button', { type: 'submit', class: 'nudge-button nudge-primary', text: 'Save' });
      const reset = h('button', { type: 'button', class: 'nudge-button', text: 'Reset to defaults', onclick: () => this.reset() });
      const buttons = h('div', { class: 'nudge-actions' }, this.saveButton, reset);
      form.append(globals, ...typeSets, quietSet, buttons);
      this.body.replaceChildren(header, form);
      this.msg = message(this.body);
      this.body.append(this.topics.element);
      this.syncQuiet();
    }

    inboxLink() {
      const link = h('a', { class: 'nudge-button', href: INBOX_URL, text: 'Back to notifications' });
      link.addEventListener('click', () => {
        if (sameServer(INBOX_URL) && this.inbox.token) link.href = `${INBOX_URL}#access_token=${encodeURIComponent(this.inbox.token)}`;
      });
      return link;
    }

    typeRow(type, schema) {
      const name = humanise(type.name);
      const row = h('div', { class: `nudge-type${type.critical ? ' nudge-critical' : ''}`, 'data-type': type.name });
      row.append(
        h(
          'div',
          { class: 'nudge-type-name' },
          h('strong', { text: name }),
          type.critical ? h('span', { class: 'nudge-chip nudge-lock', text: 'Required', title: 'Required notifications cannot be switched off' }) : null,
        ),
      );
      const channels = h('div', { class: 'nudge-type-channels' });
      for (const channel of type.channels) {
        const id = uid('tc');
        channels.append(
          h(
            'div',
            { class: 'nudge-field nudge-check' },
            h('input', {
              id,
              type: 'checkbox',
              'data-type': type.name,
              'data-channel': channel,
              checked: this.typeChannelOn(type, channel),
              disabled: type.critical,
              onchange: (e) => this.setTypeChannel(type, channel, e.target.checked),
            }),
            h('label', { for: id, text: channelName(channel) }, h('span', { class: 'nudge-sr-only', text: ` for ${name}${type.critical ? ' (required)' : ''}` })),
          ),
        );
      }
      if (!type.channels.length) channels.append(h('span', { class: 'nudge-hint', text: 'No channels' }));
      const freqId = uid('freq');
      const own = this.draft.types[type.name] && this.draft.types[type.name].frequency;
      const frequency = h(
        'select',
        {
          id: freqId,
          class: 'nudge-input',
          'data-frequency': type.name,
          disabled: type.critical,
          onchange: (e) => {
            const entry = (this.draft.types[type.name] = this.draft.types[type.name] || { channels: {} });
            if (e.target.value === type.frequency) delete entry.frequency;
            else entry.frequency = e.target.value;
          },
        },
        schema.frequencies.map((f) => h('option', { value: f, text: FREQUENCY_NAMES[f] || humanise(f) })),
      );
      frequency.value = type.critical ? 'instant' : own || type.frequency;
      row.append(channels, h('div', { class: 'nudge-field' }, h('label', { for: freqId, text: 'How often' }, h('span', { class: 'nudge-sr-only', text: ` for ${name}` })), frequency));
      return row;
    }

    syncTypeBoxes() {
      for (const box of this.body.querySelectorAll('input[data-channel]')) {
        const type = this.schema.types.find((t) => t.name === box.getAttribute('data-type'));
        if (type) box.checked = this.typeChannelOn(type, box.getAttribute('data-channel'));
      }
    }

    syncQuiet() {
      const on = this.quietOn.checked;
      this.quietStart.disabled = !on;
      this.quietEnd.disabled = !on;
    }

    document() {
      const doc = JSON.parse(JSON.stringify(this.draft));
      for (const [name, entry] of Object.entries(doc.types)) {
        if (!Object.keys(entry.channels || {}).length) delete entry.channels;
        if (!Object.keys(entry).length) delete doc.types[name];
      }
      doc.timezone = this.zone.value;
      doc.quiet_hours = this.quietOn.checked ? { start: this.quietStart.value, end: this.quietEnd.value, timezone: this.zone.value } : null;
      return doc;
    }

    async save() {
      this.saveButton.disabled = true;
      try {
        const saved = await this.inbox.request('PUT', '/v1/me/preferences', this.document());
        this.draft = normalise(saved);
        this.msg.ok('Preferences saved.');
      } catch (error) {
        this.msg.fail(error);
      } finally {
        this.saveButton.disabled = false;
      }
    }

    async reset() {
      try {
        const prefs = await this.inbox.request('DELETE', '/v1/me/preferences');
        this.draft = normalise(prefs);
        this.render();
        this.msg.ok('Preferences reset to the defaults.');
      } catch (error) {
        this.msg.fail(error);
      }
    }
  }

  /**
   * "Topics you follow" (`GET /v1/me/topics`), each with a Leave button
   * (`DELETE /v1/me/topics/{topic}`). Users only leave topics: the
   * application adds them, since a topic's name may be private.
   */
  class TopicsSection {
    constructor(inbox) {
      this.inbox = inbox;
      const headingId = uid('topics');
      this.heading = h('h2', { id: headingId, class: 'nudge-section-title', tabindex: '-1', text: 'Topics you follow' });
      this.list = h('ul', { class: 'nudge-list nudge-topics', 'aria-labelledby': headingId, hidden: true });
      this.empty = h('p', { class: 'nudge-empty', text: "You don't follow any topics.", hidden: true });
      this.element = h(
        'section',
        { class: 'nudge-fieldset', 'aria-labelledby': headingId },
        this.heading,
        h('p', { class: 'nudge-hint', text: 'The application adds you to topics to send you their announcements. Once you leave one, only the application can add you again.' }),
        this.list,
        this.empty,
      );
      this.msg = message(this.element);
    }

    async load() {
      this.list.hidden = true;
      this.empty.hidden = true;
      this.msg.ok('Loading…');
      try {
        const answer = await this.inbox.request('GET', '/v1/me/topics');
        this.list.replaceChildren(...((answer && answer.topics) || []).map((t) => this.row(t)));
        this.update();
        this.msg.clear();
      } catch (error) {
        this.msg.fail(error);
      }
    }

    update() {
      const any = this.list.children.length > 0;
      this.list.hidden = !any;
      this.empty.hidden = any;
    }

    row(topic) {
      const leave = h('button', { type: 'button', class: 'nudge-button', text: 'Leave', 'aria-label': `Leave topic ${topic.topic}` });
      const li = h(
        'li',
        { class: 'nudge-topic', 'data-topic': topic.topic },
        h(
          'div',
          { class: 'nudge-item-main' },
          h('strong', { class: 'nudge-topic-name', text: topic.topic }),
          h(
            'p',
            { class: 'nudge-topic-meta' },
            'Followed ',
            h('time', { datetime: topic.subscribed_at, title: new Date(topic.subscribed_at).toLocaleString(), text: timeText(topic.subscribed_at) }),
          ),
        ),
        leave,
      );
      leave.addEventListener('click', () => this.leave(topic.topic, li, leave));
      return li;
    }

    async leave(topic, li, button) {
      button.disabled = true;
      try {
        await this.inbox.request('DELETE', `/v1/me/topics/${encodeURIComponent(topic)}`);
        this.msg.ok(`You left ${topic}.`);
      } catch (error) {
        if (error.status !== 404) {
          button.disabled = false;
          button.focus();
          this.msg.fail(error);
          return;
        }
        // Left already (another tab, or the application): the same end.
        this.msg.ok(`You had already left ${topic}.`);
      }
      // Focus was on the button that goes away: keep it in the list.
      const next = li.nextElementSibling || li.previousElementSibling;
      li.remove();
      this.update();
      (next ? next.querySelector('button') : this.heading).focus();
    }
  }

  function normalise(prefs) {
    const doc = JSON.parse(JSON.stringify(prefs || {}));
    doc.channels = doc.channels || {};
    doc.types = doc.types || {};
    for (const entry of Object.values(doc.types)) entry.channels = entry.channels || {};
    return doc;
  }

  function timeZones() {
    try {
      if (typeof Intl.supportedValuesOf === 'function') {
        const zones = Intl.supportedValuesOf('timeZone');
        return zones.includes('UTC') ? [...zones] : ['UTC', ...zones];
      }
    } catch {
      /* fall through */
    }
    return ['UTC', 'Europe/London', 'Europe/Berlin', 'America/New_York', 'America/Los_Angeles', 'Asia/Tokyo', 'Australia/Sydney'];
  }

  // ---------------------------------------------------------------------
  // Start-up

  const inbox = new Inbox();
  const api = {
    setToken: (token) => inbox.setToken(token),
    mount: (target, options) => {
      inbox.mount(target, options);
    },
    open: () => inbox.views.forEach((v) => v instanceof Bell && v.open()),
    close: () => inbox.views.forEach((v) => v instanceof Bell && v.close(false)),
    refresh: () => {
      inbox.refreshCounts();
      inbox.views.forEach((v) => v.reload());
    },
    on: (event, fn) => inbox.on(event, fn),
    get counts() {
      return inbox.counts;
    },
    get transport() {
      return inbox.transport;
    },
  };
  window.Nudge = Object.assign(window.Nudge || {}, { inbox: Object.freeze(api) });

  /** The token of the tag, else one handed over in the fragment (kept for the tab). */
  function initialToken() {
    const fromTag = data('token');
    if (fromTag) return fromTag;
    const fragment = new URLSearchParams(location.hash.replace(/^#/, ''));
    const fromFragment = fragment.get('access_token');
    if (fromFragment) {
      try {
        sessionStorage.setItem(TOKEN_KEY, fromFragment);
      } catch {
        /* storage off: the token lasts until reload */
      }
      history.replaceState(null, '', location.pathname + location.search);
      return fromFragment;
    }
    try {
      return sessionStorage.getItem(TOKEN_KEY);
    } catch {
      return null;
    }
  }

  inbox.token = initialToken();
  const target = data('target');
  if (target) {
    const mountNow = () => {
      try {
        inbox.mount(target, { view: data('view') || 'bell' });
        if (!inbox.token) {
          for (const view of inbox.views) if (view.msg) view.msg.fail('Not signed in: no token.');
        }
      } catch (error) {
        console.error(error);
      }
    };
    if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', mountNow, { once: true });
    else mountNow();
  }
})();
