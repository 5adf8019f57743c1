/* global document, window, localStorage, sessionStorage, fetch, setTimeout, clearTimeout, setInterval, clearInterval, requestAnimationFrame, URLSearchParams */
// The demo UI. All protocol work is in parley-client.js; this file keeps the conversations
// (in localStorage, per user), renders them, and turns clicks into client calls.
import { devToken, ParleyClient } from './parley-client.js';

const USER_PATTERN = /^[A-Za-z0-9_.-]{1,64}$/;
const params = new URLSearchParams(window.location.search);
const PRESENCE_EVERY_MS = Number(params.get('presenceMs')) || 5000;
const TYPING_SHOWN_MS = 4000;
const TYPING_SEND_EVERY_MS = 2000;
const STATUS_ORDER = ['pending', 'accepted', 'delivered', 'read'];
/** Messages a report quotes: the reported user's last ones in the chat (MAX_REPORTED_MESSAGES). */
const REPORTED_MESSAGES = 20;

const $ = (id) => document.getElementById(id);
const el = (tag, props = {}, ...children) => {
  const node = Object.assign(document.createElement(tag), props);
  for (const child of children) if (child !== null && child !== undefined) node.append(child);
  return node;
};

/** Everything the page knows, for the signed-in user. */
const state = {
  me: null,
  client: null,
  store: null, // { convs: {key: conv}, messages: {key: [msg]}, reads: [{to, mids, ids}] } persisted per user
  open: null, // key of the open conversation
  presence: new Map(), // user -> online
  typing: new Map(), // conversation key -> { from, until }
  blocked: new Set(), // users whose 1:1 messages the server no longer delivers here
  reporting: null, // key of the 1:1 conversation the report form (and what is typed in it) is for
  lastTypingSent: 0,
  presenceTimer: null,
  typingTimer: null,
};

// ------------------------------------------------------------------ storage

const storeKey = (user) => `parley:v1:${user}`;

function loadStore(user) {
  try {
    const saved = JSON.parse(localStorage.getItem(storeKey(user)) ?? 'null');
    if (saved && saved.convs && saved.messages) return { reads: [], ...saved };
  } catch {
    /* a broken store starts over */
  }
  return { convs: {}, messages: {}, reads: [] };
}

let saveTimer = null;
function save() {
  clearTimeout(saveTimer);
  saveTimer = setTimeout(saveNow, 100);
}

/**
 * Stores at once: a deliverable's handler calls it, and the client acks only after the handler
 * returns, so nothing is acked that is not stored.
 */
function saveNow() {
  clearTimeout(saveTimer);
  if (mergeStored()) changed();
  try {
    localStorage.setItem(storeKey(state.me), JSON.stringify(state.store));
  } catch (err) {
    toast(`could not store the conversation (${err.name}): older messages may be lost`);
  }
}

/**
 * Takes in what another tab of this user stored: every tab writes the same key, and each would
 * otherwise replace what the others sent and received with its own copy. Conversations and
 * messages are only ever added, so the union is right; a message both hold keeps the further
 * status. Returns whether anything changed here.
 */
function mergeStored() {
  const saved = loadStore(state.me);
  let news = false;
  for (const [key, conv] of Object.entries(saved.convs)) {
    if (!state.store.convs[key]) {
      state.store.convs[key] = conv;
      state.store.messages[key] = [];
      news = true;
    }
    const ours = new Map();
    for (const msg of state.store.messages[key]) ours.set(msg.mine ? `id:${msg.id}` : msg.mid, msg);
    for (const msg of saved.messages[key] ?? []) {
      const known = ours.get(msg.mine ? `id:${msg.id}` : msg.mid);
      if (!known) news = addMessage(key, msg) || news;
      else if (
        known.status !== 'failed' &&
        STATUS_ORDER.indexOf(msg.status) > STATUS_ORDER.indexOf(known.status)
      ) {
        Object.assign(known, { status: msg.status, mid: known.mid ?? msg.mid });
        news = true;
      }
    }
  }
  return news;
}

const directKey = (user) => `direct:${user}`;
const groupKey = (group) => `group:${group}`;

function conversation(key, defaults) {
  let conv = state.store.convs[key];
  if (!conv) {
    conv = { key, unread: 0, updatedAt: Date.now(), ...defaults };
    state.store.convs[key] = conv;
    state.store.messages[key] = [];
  }
  return conv;
}

function findMessage(mid) {
  for (const [key, list] of Object.entries(state.store.messages)) {
    const msg = list.find((m) => m.mid === mid);
    if (msg) return { key, msg };
  }
  return null;
}

/** Adds a message once (by `mid`), in time order. Returns false for a duplicate. */
function addMessage(key, msg) {
  const list = state.store.messages[key];
  if (msg.mid && list.some((m) => m.mid === msg.mid)) return false;
  let at = list.length;
  while (at > 0 && (list[at - 1].sentAt ?? 0) > msg.sentAt) at--;
  list.splice(at, 0, msg);
  state.store.convs[key].updatedAt = Math.max(state.store.convs[key].updatedAt, msg.sentAt);
  return true;
}

function raise(msg, status) {
  if (STATUS_ORDER.indexOf(status) > STATUS_ORDER.indexOf(msg.status)) msg.status = status;
}

// ------------------------------------------------------------------ protocol events

function onMessage(frame) {
  const mine = frame.from === state.me;
  const key = frame.chat === 'group' ? groupKey(frame.to) : directKey(mine ? frame.to : frame.from);
  const conv = conversation(
    key,
    frame.chat === 'group'
      ? { chat: 'group', id: frame.to, name: frame.to }
      : { chat: 'direct', id: key.slice(7), name: key.slice(7) },
  );
  if (conv.chat === 'group' && !conv.members) void refreshGroup(conv.id);
  const added = addMessage(key, {
    mid: frame.mid,
    id: frame.id,
    from: frame.from,
    text: textOf(frame.body),
    // A report quotes what it received: the body too where the text alone does not give it back.
    ...(!mine && !isPlainText(frame.body) && { body: frame.body }),
    sentAt: frame.sentAt ?? Date.now(),
    mine,
    status: mine ? 'accepted' : undefined,
    readSent: mine,
  });
  if (!added) return;
  state.typing.delete(key);
  if (!mine && key !== state.open) conv.unread += 1;
  saveNow();
  changed();
}

function onReceipt(frame) {
  let marked = false;
  for (const mid of frame.mids ?? []) {
    const found = findMessage(mid);
    if (!found || !found.msg.mine) continue;
    const { msg, key } = found;
    // 1:1: one peer. Groups: every other member (as far as we know them). A receipt counts only
    // from a recipient: the server cannot check that its sender received the mids it names.
    const conv = state.store.convs[key];
    const recipients = conv.chat === 'group' ? conv.members?.filter((m) => m !== state.me) : [conv.id];
    if (recipients && !recipients.includes(frame.by)) continue;
    const others = recipients ?? [frame.by];
    const field = frame.status === 'read' ? 'readBy' : 'deliveredBy';
    msg[field] = [...new Set([...(msg[field] ?? []), frame.by])];
    if (frame.status === 'read') msg.deliveredBy = [...new Set([...(msg.deliveredBy ?? []), frame.by])];
    if (others.every((m) => (msg.deliveredBy ?? []).includes(m))) raise(msg, 'delivered');
    if (others.every((m) => (msg.readBy ?? []).includes(m))) raise(msg, 'read');
    marked = true;
  }
  if (marked) saveNow(); // before the client acks the receipt: the server keeps none once acked
  changed();
}

/** A read frame answered (accepted, or refused for good): a read is forgotten once all its frames are. */
function settleRead(id) {
  const before = state.store.reads.length;
  for (const read of state.store.reads) read.ids = read.ids.filter((readId) => readId !== id);
  state.store.reads = state.store.reads.filter((read) => read.ids.length > 0);
  return state.store.reads.length < before;
}

function onAccepted({ id, mid }) {
  if (settleRead(id)) return save();
  for (const list of Object.values(state.store.messages)) {
    const msg = list.find((m) => m.mine && m.id === id);
    if (msg) {
      msg.mid = mid;
      raise(msg, 'accepted');
      changed();
      return;
    }
  }
}

async function onGroup(frame) {
  const conv = conversation(groupKey(frame.group), {
    chat: 'group',
    id: frame.group,
    name: frame.name ?? frame.group,
  });
  if (frame.name) conv.name = frame.name;
  const who = frame.by === state.me ? 'You' : frame.by;
  const what =
    {
      create: `${who} created “${frame.name ?? frame.group}”`,
      add: `${who} added ${(frame.members ?? []).join(', ')}`,
      remove: `${who} removed ${(frame.members ?? []).join(', ')}`,
      leave: `${who} left`,
      rename: `${who} renamed the group to “${frame.name}”`,
    }[frame.op] ?? `${who}: ${frame.op}`;
  addMessage(conv.key, { mid: frame.mid, system: true, text: what, sentAt: frame.at ?? Date.now() });
  saveNow();
  changed();
  await refreshGroup(frame.group);
}

async function refreshGroup(id) {
  const conv = conversation(groupKey(id), { chat: 'group', id, name: id });
  try {
    const group = await state.client.group(id);
    Object.assign(conv, { name: group.name, members: group.members, left: false });
  } catch (err) {
    if (err.status === 404) conv.left = true;
  }
  changed();
}

function onTyping(frame) {
  if (frame.from === state.me) return;
  const key = frame.chat === 'group' ? groupKey(frame.to) : directKey(frame.from);
  state.typing.set(key, { from: frame.from, until: Date.now() + TYPING_SHOWN_MS });
  changed();
  clearTimeout(state.typingTimer);
  state.typingTimer = setTimeout(changed, TYPING_SHOWN_MS + 50);
}

function onRejected(frame) {
  // `unavailable` and `rate_limited`: the client sends it again by itself.
  if (frame.id && frame.code !== 'unavailable' && frame.code !== 'rate_limited') {
    settleRead(frame.id);
    for (const list of Object.values(state.store.messages)) {
      const msg = list.find((m) => m.mine && m.id === frame.id);
      // A repeat of the same id may be refused (not_member, once the sender left the group) after
      // the first went out: what a receipt showed delivered or read stays so.
      if (msg && STATUS_ORDER.indexOf(msg.status) < STATUS_ORDER.indexOf('delivered')) msg.status = 'failed';
    }
    saveNow(); // a refusal with a `mid` is a deliverable: stored before the client acks it
  }
  toast(`${frame.code}: ${frame.message}`);
  changed();
}

// ------------------------------------------------------------------ actions

let signingIn = null;
/**
 * One sign-in at a time: a second one while the first awaits its token (a double click, Enter
 * pressed twice, the remembered user's sign-in) would open a second client, never closed.
 */
function signIn(user) {
  signingIn ??= startSession(user).catch((err) => {
    signingIn = null;
    throw err;
  });
  return signingIn;
}

async function startSession(user) {
  const config = await (await fetch('config.json')).json();
  const deviceId =
    sessionStorage.getItem('parley:device') ?? `web-${Math.random().toString(36).slice(2, 10)}`;
  sessionStorage.setItem('parley:device', deviceId);
  const token = await devToken('', user); // fails early on a bad name or outside dev mode
  let first = token;
  const client = new ParleyClient({
    restUrl: '',
    wsUrl: config.wsUrl,
    deviceId,
    // A real app would refresh its JWT here; dev tokens are simply asked for again.
    getToken: async () => {
      const t = first ?? (await devToken('', user));
      first = null;
      return t;
    },
  });
  state.me = user;
  state.client = client;
  state.store = loadStore(user);
  sessionStorage.setItem('parley:user', user);
  client.addEventListener('status', ({ detail }) => renderStatus(detail));
  client.addEventListener('message', ({ detail }) => onMessage(detail));
  client.addEventListener('receipt', ({ detail }) => onReceipt(detail));
  client.addEventListener('group', ({ detail }) => void onGroup(detail));
  client.addEventListener('typing', ({ detail }) => onTyping(detail));
  client.addEventListener('accepted', ({ detail }) => onAccepted(detail));
  client.addEventListener('rejected', ({ detail }) => onRejected(detail));
  // What was sent and never accepted before the page went away goes out again, under its own id.
  for (const [key, list] of Object.entries(state.store.messages)) {
    const conv = state.store.convs[key];
    for (const msg of list)
      if (msg.mine && msg.status === 'pending') {
        msg.mid ??= `${user}:${msg.id}`; // stored before the first `hello` by an earlier release
        client.send(conv.id, { text: msg.text }, conv.chat, msg.id);
      }
  }
  // So do the read receipts (docs/protocol.md: a read stays in the outbox until accepted).
  for (const read of state.store.reads) read.ids = client.read(read.to, read.mids);
  client.start();
  window.parley = { client, state }; // for the console (and the tests)

  $('login').hidden = true;
  $('app').hidden = false;
  $('me').textContent = user;
  paintAvatar($('me-avatar'), user);
  client.groups().then(
    (groups) => {
      for (const g of groups)
        Object.assign(conversation(groupKey(g.id), { chat: 'group', id: g.id }), {
          name: g.name,
          members: g.members,
        });
      changed();
    },
    () => undefined,
  );
  client.blocks().then(
    (users) => {
      state.blocked = new Set(users);
      changed();
    },
    () => undefined,
  );
  state.presenceTimer = setInterval(pollPresence, PRESENCE_EVERY_MS);
  void pollPresence();
  changed();
}

async function toggleBlock() {
  const conv = state.store.convs[state.open];
  if (!conv || conv.chat !== 'direct') return;
  const blocking = !state.blocked.has(conv.id);
  try {
    await (blocking ? state.client.block(conv.id) : state.client.unblock(conv.id));
  } catch (err) {
    return toast(err.message);
  }
  if (blocking) state.blocked.add(conv.id);
  else state.blocked.delete(conv.id);
  toast(
    blocking
      ? `You blocked ${conv.id}: their messages no longer reach you, and you show offline to them`
      : `You unblocked ${conv.id}: what they send from now on arrives`,
  );
  changed();
}

/** Opens the report form for the open 1:1 chat (what was typed for it before is still there), or closes it. */
function toggleReport() {
  const conv = state.store.convs[state.open];
  if (!conv || !withAnother(conv)) return;
  const form = $('report-form');
  if (state.reporting === conv.key && !form.hidden) {
    state.reporting = null;
  } else {
    if (state.reporting !== conv.key) form.reset(); // a draft for another user is not this one's
    state.reporting = conv.key;
    renderChat();
    $('report-reason').focus();
  }
  changed();
}

function closeReport() {
  state.reporting = null;
  $('report-form').reset();
  $('report-form').hidden = true; // now, not on the next frame: before the toast that may follow
  changed();
}

/** The messages a report of `conv`'s user quotes: their last ones here, as received. */
function reportEvidence(conv) {
  return state.store.messages[conv.key]
    .filter((msg) => !msg.mine && !msg.system && msg.from === conv.id && msg.mid)
    .slice(-REPORTED_MESSAGES)
    .map((msg) => ({ mid: msg.mid, body: msg.body ?? { text: msg.text }, sentAt: msg.sentAt }));
}

async function sendReport() {
  const conv = state.store.convs[state.reporting];
  if (!conv) return;
  const comment = $('report-comment').value.trim();
  const button = $('report-send');
  button.disabled = true; // one report per press
  try {
    await state.client.report(conv.id, $('report-reason').value, {
      ...(comment && { comment }),
      messages: reportEvidence(conv),
    });
  } catch (err) {
    return toast(`Could not report ${conv.id}: ${err.message}`); // the form keeps what was typed
  } finally {
    button.disabled = false;
  }
  if (state.reporting === conv.key) closeReport(); // not a form opened for another user meanwhile
  toast(`Reported ${conv.id} to the moderators`);
}

function signOut() {
  state.client?.close();
  clearInterval(state.presenceTimer);
  saveNow();
  sessionStorage.removeItem('parley:user');
  window.location.reload();
}

function openConversation(key) {
  state.open = key;
  const conv = state.store.convs[key];
  conv.unread = 0;
  $('composer').hidden = false;
  $('composer-input').focus();
  changed();
  void pollPresence();
}

function sendText(text) {
  const conv = state.store.convs[state.open];
  if (!conv || !text.trim()) return;
  let sent;
  try {
    sent = state.client.send(conv.id, { text }, conv.chat);
  } catch (err) {
    toast(err.message); // over the frame limit
    return;
  }
  const { id } = sent;
  addMessage(conv.key, {
    id,
    // The client knows its user only from the first `hello`; a mid is `<sender>:<id>` either way,
    // and a receipt that comes before this message's `accepted` finds it by that.
    mid: sent.mid ?? `${state.me}:${id}`,
    from: state.me,
    text,
    sentAt: Date.now(),
    mine: true,
    status: 'pending',
    readSent: true,
  });
  changed();
}

/** Read receipts for what the user sees: the open conversation, while the page is visible. */
function markRead() {
  if (!state.open || document.visibilityState !== 'visible' || state.client.state !== 'online') return;
  const unread = state.store.messages[state.open].filter((m) => !m.mine && !m.system && !m.readSent);
  const bySender = new Map();
  for (const msg of unread) {
    bySender.set(msg.from, [...(bySender.get(msg.from) ?? []), msg.mid]);
    msg.readSent = true;
  }
  // Stored until accepted, as a message is: a page closed before then sends them again when opened.
  for (const [from, mids] of bySender)
    state.store.reads.push({ to: from, mids, ids: state.client.read(from, mids) });
  if (unread.length > 0) save();
}

async function pollPresence() {
  if (!state.client) return;
  const users = new Set();
  for (const conv of Object.values(state.store.convs)) if (conv.chat === 'direct') users.add(conv.id);
  const open = state.store.convs[state.open];
  if (open?.chat === 'group') for (const m of open.members ?? []) if (m !== state.me) users.add(m);
  try {
    for (const p of await state.client.presence([...users].slice(0, 100)))
      state.presence.set(p.user, p.online);
    changed();
  } catch {
    /* next time */
  }
}

// ------------------------------------------------------------------ rendering

let frame = null;
function changed() {
  save();
  if (frame === null) frame = requestAnimationFrame(render);
}

function render() {
  frame = null;
  markRead();
  renderConversations();
  renderChat();
}

const COLORS = ['#e57373', '#64b5f6', '#81c784', '#ffb74d', '#ba68c8', '#4db6ac', '#f06292', '#7986cb'];
function paintAvatar(node, name, group = false) {
  let hash = 0;
  for (const c of name) hash = (hash * 31 + c.charCodeAt(0)) >>> 0;
  node.style.background = COLORS[hash % COLORS.length];
  node.classList.toggle('group', group);
  node.textContent = name[0] ?? '?';
  return node;
}

/*
 * The list and the chat are drawn again on every change (a message, a receipt, a presence poll),
 * but into the nodes already there: a node replaced between a press and its release loses the
 * click (the browser sends it to no conversation), and a replaced message loses a text selection.
 */

/** Puts `nodes` in `parent` in this order, moving only what is out of place. */
function placeChildren(parent, nodes) {
  const wanted = new Set(nodes);
  for (const child of [...parent.children]) if (!wanted.has(child)) child.remove();
  nodes.forEach((node, at) => {
    if (parent.children[at] !== node) parent.insertBefore(node, parent.children[at] ?? null);
  });
}

function setText(node, text) {
  if (node.textContent !== text) node.textContent = text;
}

const convItems = new Map(); // conversation key -> its list item's nodes

function convItem(conv) {
  let item = convItems.get(conv.key);
  if (!item) {
    item = {
      li: el('li', { className: 'conv', onclick: () => openConversation(conv.key) }),
      avatar: el('span', { className: 'avatar' }),
      dot: el('span', { className: 'dot' }),
      name: el('div', { className: 'conv-name' }),
      preview: el('div', { className: 'conv-last' }),
      badge: el('span', { className: 'badge' }),
      painted: null,
    };
    item.li.dataset.key = conv.key;
    item.li.append(item.avatar, el('div', { className: 'conv-main' }, item.name, item.preview));
    convItems.set(conv.key, item);
  }
  return item;
}

function convPreview(conv) {
  const messages = state.store.messages[conv.key];
  const last = messages[messages.length - 1];
  if (last)
    return `${last.mine ? 'You: ' : conv.chat === 'group' && last.from ? `${last.from}: ` : ''}${last.text}`;
  return conv.chat === 'group' ? `${(conv.members ?? []).length} members` : '';
}

function renderConversation(conv) {
  const item = convItem(conv);
  const name = conv.name ?? conv.id;
  if (item.painted !== name) {
    paintAvatar(item.avatar, name, conv.chat === 'group');
    if (conv.chat === 'direct') item.avatar.append(item.dot);
    item.painted = name;
  }
  if (conv.chat === 'direct') paintPresence(item.dot, conv.id);
  item.li.classList.toggle('active', conv.key === state.open);
  setText(item.name, name);
  const typing = state.typing.get(conv.key);
  const typingNow = typing !== undefined && typing.until > Date.now();
  item.preview.classList.toggle('typing-now', typingNow);
  setText(item.preview, typingNow ? 'typing…' : convPreview(conv));
  if (conv.unread > 0) {
    setText(item.badge, String(conv.unread));
    if (!item.badge.isConnected) item.li.append(item.badge);
  } else item.badge.remove();
  return item.li;
}

function renderConversations() {
  const convs = Object.values(state.store.convs).sort((a, b) => b.updatedAt - a.updatedAt);
  placeChildren($('conversations'), convs.map(renderConversation));
}

function paintPresence(dot, user) {
  const online = state.presence.get(user) === true;
  dot.title = online ? 'online' : 'offline';
  dot.dataset.online = String(online);
}

function renderChat() {
  const conv = state.store.convs[state.open];
  if (!conv) return;
  $('chat-title').textContent = conv.name ?? conv.id;
  const sub = $('chat-sub');
  if (conv.chat === 'direct') {
    sub.replaceChildren(state.presence.get(conv.id) ? 'online' : 'offline');
    sub.dataset.online = String(state.presence.get(conv.id) === true);
  } else {
    sub.replaceChildren(
      conv.left
        ? 'you are not a member'
        : (conv.members ?? []).map((m) => (m === state.me ? 'you' : m)).join(', '),
    );
    delete sub.dataset.online;
  }
  const typing = state.typing.get(conv.key);
  $('typing').textContent = typing && typing.until > Date.now() ? `${typing.from} is typing…` : '';
  const toggle = $('block-toggle');
  toggle.hidden = !withAnother(conv);
  setText(toggle, state.blocked.has(conv.id) ? 'Unblock' : 'Block');
  renderReport(conv);

  const box = $('messages');
  const atBottom = box.scrollHeight - box.scrollTop - box.clientHeight < 40;
  placeChildren(
    box,
    state.store.messages[conv.key].map((msg) => messageItem(conv, msg)),
  );
  if (atBottom || box.dataset.key !== conv.key) box.scrollTop = box.scrollHeight;
  box.dataset.key = conv.key;
}

/** A 1:1 chat with someone else: one you can block and report (a chat with yourself is neither). */
function withAnother(conv) {
  return conv.chat === 'direct' && conv.id !== state.me;
}

/**
 * The report form is in the page once, not drawn: what is typed in it stays through every redraw.
 * It shows in the chat it was opened for, and hides (keeping the draft) in the others.
 */
function renderReport(conv) {
  $('report-toggle').hidden = !withAnother(conv);
  const form = $('report-form');
  const open = state.reporting === conv.key;
  form.hidden = !open;
  $('report-toggle').setAttribute('aria-expanded', String(open));
  if (!open) return;
  setText($('report-user'), conv.id);
  const quoted = reportEvidence(conv).length;
  const note =
    quoted === 0
      ? `No messages from ${conv.id} in this chat go with it.`
      : quoted === 1
        ? 'Their last message in this chat goes with it.'
        : `Their last ${quoted} messages in this chat go with it.`;
  setText($('report-evidence'), note);
}

const messageItems = new WeakMap(); // message -> { li, drawn }: drawn again only when it changed

function messageItem(conv, msg) {
  const drawn = `${msg.status}:${msg.mid}`;
  const known = messageItems.get(msg);
  if (known?.drawn === drawn) return known.li;
  const li = renderMessage(conv, msg);
  messageItems.set(msg, { li, drawn });
  return li;
}

const TICKS = { pending: '…', accepted: '✓', delivered: '✓✓', read: '✓✓', failed: '⚠' };
function renderMessage(conv, msg) {
  if (msg.system) return el('li', { className: 'system', textContent: msg.text });
  const time = new Date(msg.sentAt).toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' });
  const meta = el('div', { className: 'meta' }, time);
  if (msg.mine) {
    const ticks = el('span', { className: 'ticks', textContent: TICKS[msg.status] ?? '', title: msg.status });
    ticks.dataset.status = msg.status;
    meta.append(ticks);
  }
  const item = el(
    'li',
    { className: `msg${msg.mine ? ' mine' : ''}` },
    conv.chat === 'group' && !msg.mine ? el('div', { className: 'from', textContent: msg.from }) : null,
    el('div', { className: 'text', textContent: msg.text }),
    meta,
  );
  if (msg.mid) item.dataset.mid = msg.mid;
  return item;
}

function renderStatus({ state: s, retryInMs }) {
  const node = $('conn-status');
  node.dataset.state = s;
  node.textContent =
    s === 'offline' && retryInMs !== undefined ? `offline, retry in ${Math.ceil(retryInMs / 1000)}s` : s;
  if (s === 'online') changed(); // read receipts held while offline
}

let toastTimer = null;
function toast(text) {
  const node = $('toast');
  node.textContent = text;
  node.hidden = false;
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => (node.hidden = true), 4000);
}

/** A body that `{text}` gives back whole. */
function isPlainText(body) {
  return (
    body !== null &&
    typeof body === 'object' &&
    typeof body.text === 'string' &&
    Object.keys(body).length === 1
  );
}

function textOf(body) {
  if (body && typeof body === 'object' && typeof body.text === 'string') return body.text;
  return JSON.stringify(body);
}

// ------------------------------------------------------------------ wiring

$('login-form').addEventListener('submit', async (event) => {
  event.preventDefault();
  const user = $('login-user').value.trim();
  const error = $('login-error');
  error.hidden = true;
  try {
    if (!USER_PATTERN.test(user)) throw new Error('letters, digits, . _ - only (at most 64)');
    await signIn(user);
  } catch (err) {
    error.textContent = `Could not sign in: ${err.message}`;
    error.hidden = false;
  }
});

$('new-chat-form').addEventListener('submit', (event) => {
  event.preventDefault();
  const user = $('new-chat-user').value.trim();
  if (!USER_PATTERN.test(user) || user === state.me) return toast('not a valid user name');
  conversation(directKey(user), { chat: 'direct', id: user, name: user });
  $('new-chat-user').value = '';
  openConversation(directKey(user));
});

$('new-group-form').addEventListener('submit', async (event) => {
  event.preventDefault();
  const name = $('group-name').value.trim();
  const members = $('group-members')
    .value.split(/[\s,]+/)
    .filter(Boolean);
  try {
    const group = await state.client.createGroup(name, members);
    Object.assign(conversation(groupKey(group.id), { chat: 'group', id: group.id }), {
      name: group.name,
      members: group.members,
    });
    $('group-name').value = '';
    $('group-members').value = '';
    $('new-group').open = false;
    openConversation(groupKey(group.id));
  } catch (err) {
    toast(`Could not create the group: ${err.message}`);
  }
});

$('composer').addEventListener('submit', (event) => {
  event.preventDefault();
  const input = $('composer-input');
  sendText(input.value);
  input.value = '';
  state.lastTypingSent = 0;
});

$('composer-input').addEventListener('input', () => {
  const conv = state.store.convs[state.open];
  if (!conv || Date.now() - state.lastTypingSent < TYPING_SEND_EVERY_MS) return;
  state.lastTypingSent = Date.now();
  state.client.typing(conv.id, conv.chat);
});

$('sign-out').addEventListener('click', signOut);
$('block-toggle').addEventListener('click', () => void toggleBlock());
$('report-toggle').addEventListener('click', toggleReport);
$('report-cancel').addEventListener('click', closeReport);
$('report-form').addEventListener('submit', (event) => {
  event.preventDefault();
  void sendReport();
});
document.addEventListener('visibilitychange', () => changed());
window.addEventListener('pagehide', () => {
  if (state.me) saveNow();
});
// Another tab of this user stored its conversations: show what it sent and received here too.
window.addEventListener('storage', (event) => {
  if (state.me && event.key === storeKey(state.me) && mergeStored()) changed();
});

// A reload keeps this tab signed in (each tab has its own user and device).
const remembered = sessionStorage.getItem('parley:user');
if (remembered) signIn(remembered).catch(() => sessionStorage.removeItem('parley:user'));
