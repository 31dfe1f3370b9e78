// The web inbox in a real browser: plain Node + playwright-core driving
// Debian's chromium. Started by tests/tests/web_inbox.rs, which runs the
// control plane and the agent and serves the application's page; every
// input comes from the environment. Exits 0 when every check holds, 1 with
// the failed check otherwise.
import { createRequire } from 'node:module';
import { mkdirSync } from 'node:fs';
import { dirname } from 'node:path';

const env = (name) => {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set`);
  return value;
};
const CHROMIUM = env('NUDGE_TEST_CHROMIUM');
const PLAYWRIGHT = env('NUDGE_TEST_PLAYWRIGHT');
const HOST_URL = env('NUDGE_HOST_URL');
const CP = env('NUDGE_CP_URL');
const AGENT = env('NUDGE_AGENT_URL').replace(/\/$/, '');
const USER = env('NUDGE_USER');
const TOKEN = env('NUDGE_TOKEN');
const SCREENSHOT = env('NUDGE_SCREENSHOT');
// The topics web_inbox.rs subscribed the user to, by name.
const TOPICS = env('NUDGE_TOPICS').split(',');
const WAIT = 60000;

const require = createRequire(import.meta.url);
const { chromium } = require(PLAYWRIGHT);

const started = Date.now();
const step = (text) => console.log(`[${((Date.now() - started) / 1000).toFixed(1)}s] ${text}`);
function check(condition, what) {
  if (!condition) throw new Error(`check failed: ${what}`);
}

async function api(method, path, body) {
  const response = await fetch(CP + path, {
    method,
    headers: { Authorization: `Bearer ${TOKEN}`, 'Content-Type': 'application/json' },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await response.text();
  if (!response.ok) throw new Error(`${method} ${path}: ${response.status} ${text}`);
  return text ? JSON.parse(text) : null;
}

async function agent(path, body) {
  const response = await fetch(AGENT + path, {
    method: 'POST',
    headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify(body),
  });
  if (!response.ok) throw new Error(`agent ${path}: ${response.status} ${await response.text()}`);
}

async function eventually(what, fn, limit = WAIT) {
  const deadline = Date.now() + limit;
  let last;
  while (Date.now() < deadline) {
    try {
      last = await fn();
      if (last) return last;
    } catch (error) {
      last = error;
    }
    await new Promise((r) => setTimeout(r, 200));
  }
  throw new Error(`timed out waiting until ${what} (last: ${last})`);
}

const browser = await chromium.launch({ executablePath: CHROMIUM, args: ['--no-sandbox'] });
const problems = [];
// Every URL the pages asked for, WebSockets included: the user's token
// must never be in one (access logs keep URLs); the stream uses a ticket.
const urls = [];
// URLs whose error answer the script provokes for the page to handle: the
// browser logs such an answer as a console error of its own.
const provoked = new Set();
function watch(page, name) {
  page.on('request', (request) => urls.push(request.url()));
  page.on('websocket', (socket) => urls.push(socket.url()));
  page.on('pageerror', (error) => problems.push(`${name}: page error: ${error.message}`));
  page.on('console', (msg) => {
    const url = msg.location().url || '';
    if (msg.type() === 'error' && !url.endsWith('/favicon.ico') && !provoked.has(url)) problems.push(`${name}: console error: ${msg.text()}`);
  });
}

try {
  const context = await browser.newContext({ viewport: { width: 1100, height: 760 } });
  const page = await context.newPage();
  watch(page, 'host page');
  await page.goto(HOST_URL);
  const bell = page.locator('#bell button.nudge-bell');
  await bell.waitFor({ timeout: WAIT });
  step('the bell is on the host page');

  // The live path: the widget must be on the WebSocket.
  await page.waitForFunction(() => window.Nudge && window.Nudge.inbox.transport === 'websocket', null, { timeout: WAIT });
  step('live over WebSocket');
  check((await bell.getAttribute('aria-label')) === 'Notifications, no unread', 'the bell starts with no unread');
  check((await bell.getAttribute('aria-expanded')) === 'false', 'the dropdown starts closed');
  const controls = await bell.getAttribute('aria-controls');
  check(controls && (await page.locator(`#bell .nudge-panel#${controls}`).count()) === 1, 'aria-controls names the dropdown');

  // The app tracks an event at the agent; a rule turns it into a comment.
  await agent('/v1/track', { userId: USER, event: 'Comment Posted', properties: { author: 'Ada', text: '<b>not bold</b> & fine' } });
  await page.waitForFunction(() => document.querySelector('#bell .nudge-host')?.shadowRoot?.querySelector('.nudge-bell')?.getAttribute('aria-label') === 'Notifications, 1 unread', null, { timeout: WAIT });
  check((await page.locator('#bell .nudge-badge').textContent()) === '1', 'the badge shows 1');
  step('a tracked event reached the badge live: 1 unread');
  await agent('/v1/notify', { userId: USER, type: 'security_alert', data: { city: 'Berlin' } });
  await page.waitForFunction(() => document.querySelector('#bell .nudge-host')?.shadowRoot?.querySelector('.nudge-bell')?.getAttribute('aria-label') === 'Notifications, 2 unread', null, { timeout: WAIT });
  const liveRegion = page.locator('#bell [role="status"][aria-live="polite"]');
  await eventually('the live region announces the new notification', async () => (await liveRegion.textContent()) === 'New notification: New sign-in');
  step('a notify reached the badge live: 2 unread');

  // Open the dropdown: focus moves in, items are shown, marked seen.
  await bell.click();
  check((await bell.getAttribute('aria-expanded')) === 'true', 'aria-expanded is true when open');
  const items = page.locator('#bell .nudge-panel .nudge-item');
  await eventually('two items are listed', async () => (await items.count()) === 2);
  const desktopBox = await page.locator('#bell .nudge-panel').boundingBox();
  check(desktopBox && desktopBox.x >= 0 && desktopBox.x + desktopBox.width <= 1100, `the dropdown is on screen: ${JSON.stringify(desktopBox)}`);
  await page.waitForFunction(() => document.querySelector('#bell .nudge-host').shadowRoot.activeElement?.classList.contains('nudge-item'), null, { timeout: WAIT });
  const firstTitle = await items.first().locator('.nudge-item-title').textContent();
  check(firstTitle === 'New sign-in', `newest first: ${firstTitle}`);
  const commentBody = await items.nth(1).locator('.nudge-item-body').textContent();
  check(commentBody === '<b>not bold</b> & fine', `text stays text: ${commentBody}`);
  check((await items.nth(1).locator('b').count()) === 0, 'no markup from data');
  await eventually('both items are marked seen', async () => (await api('GET', '/v1/me/notifications/counts')).unseen === 0);
  step('the dropdown is open, focus is on the first item, items are seen');

  // Keyboard: ArrowDown moves to the next item.
  await page.keyboard.press('ArrowDown');
  check(await page.evaluate(() => document.querySelector('#bell .nudge-host').shadowRoot.activeElement?.querySelector('.nudge-item-title')?.textContent) === 'Ada commented', 'ArrowDown moves to the next item');

  mkdirSync(dirname(SCREENSHOT), { recursive: true });
  await page.screenshot({ path: SCREENSHOT });
  step(`screenshot: ${SCREENSHOT}`);

  // Clicking an item marks it read: the badge drops, and the API agrees.
  const commentId = await items.nth(1).getAttribute('data-id');
  await items.nth(1).click();
  await page.waitForFunction(() => document.querySelector('#bell .nudge-host').shadowRoot.querySelector('.nudge-bell').getAttribute('aria-label') === 'Notifications, 1 unread', null, { timeout: WAIT });
  const comment = await api('GET', `/v1/me/notifications/${commentId}`);
  check(comment.read_at, 'the clicked item is read in the API');
  check((await api('GET', '/v1/me/notifications/counts')).unread === 1, 'the API counts 1 unread');
  step('a click marked the item read: badge 1, API read_at set');

  // Escape closes and returns focus to the bell.
  await items.first().focus();
  await page.keyboard.press('Escape');
  check((await bell.getAttribute('aria-expanded')) === 'false', 'Escape closes the dropdown');
  check(await page.locator('#bell .nudge-panel').isHidden(), 'the dropdown is hidden');
  check(await page.evaluate(() => document.querySelector('#bell .nudge-host').shadowRoot.activeElement?.classList.contains('nudge-bell')), 'focus is back on the bell');
  step('Escape closed the dropdown, focus is on the bell');

  // The full inbox page on the control plane's origin, under its CSP.
  const inboxPage = await context.newPage();
  watch(inboxPage, 'inbox page');
  const inboxResponse = await inboxPage.goto(`${CP}/inbox#access_token=${encodeURIComponent(TOKEN)}`);
  const csp = inboxResponse.headers()['content-security-policy'] || '';
  check(csp.includes("script-src 'self'") && !csp.includes('unsafe-inline'), `a strict CSP: ${csp}`);
  check(!inboxPage.url().includes('access_token'), 'the token leaves the address bar');
  const rows = inboxPage.locator('.nudge-list-full .nudge-item');
  await eventually('the inbox lists both items', async () => (await rows.count()) === 2);
  await eventually('the category tabs show counts', async () => (await inboxPage.locator('[role="tab"]').count()) === 3);
  const pageShot = SCREENSHOT.replace(/\.png$/, '-page.png');
  await inboxPage.screenshot({ path: pageShot, fullPage: true });
  step(`screenshot: ${pageShot}`);
  await inboxPage.getByLabel('Show', { exact: true }).selectOption('false');
  await eventually('the unread filter leaves one', async () => (await rows.count()) === 1);
  await inboxPage.getByLabel('Show', { exact: true }).selectOption('');
  await eventually('both are back', async () => (await rows.count()) === 2);
  await inboxPage.getByLabel('Search', { exact: true }).fill('sign-in');
  await eventually('search finds one', async () => (await rows.count()) === 1);
  await inboxPage.getByLabel('Search', { exact: true }).fill('');
  await eventually('both are back after search', async () => (await rows.count()) === 2);
  // Snooze: the read item, snoozed for an hour, leaves the list; the
  // "Snoozed only" view shows it with its time; "Unsnooze" brings it back
  // unread, and the other tab's badge follows the live stream.
  const readRow = rows.filter({ has: inboxPage.getByRole('button', { name: /^Mark unread:/ }) });
  check((await readRow.count()) === 1, 'one item is read');
  const readId = await readRow.getAttribute('data-id');
  await readRow.getByRole('button', { name: /^Snooze:/ }).click();
  await readRow.getByRole('button', { name: 'For 1 hour', exact: true }).click();
  await eventually('the snoozed item leaves the list', async () => (await rows.count()) === 1);
  const snoozed = await api('GET', '/v1/me/notifications?snoozed=true');
  check(snoozed.items.length === 1 && snoozed.items[0].id === readId, 'the API lists it as snoozed');
  const ahead = Date.parse(snoozed.items[0].snoozed_until) - Date.now();
  check(ahead > 3500000 && ahead <= 3600000, `snoozed for an hour (${ahead} ms ahead)`);
  await inboxPage.getByLabel('Snoozed only').check();
  await eventually('the snoozed view shows it', async () => (await rows.count()) === 1 && (await rows.first().getAttribute('data-id')) === readId);
  check((await rows.first().textContent()).includes('Snoozed until'), 'with its time');
  await rows.first().getByRole('button', { name: /^Unsnooze:/ }).click();
  await eventually('unsnoozed, it leaves the snoozed view', async () => (await rows.count()) === 0);
  await inboxPage.getByLabel('Snoozed only').uncheck();
  await eventually('it is back in the list', async () => (await rows.count()) === 2);
  const back = await api('GET', `/v1/me/notifications/${encodeURIComponent(readId)}`);
  check(!back.read_at && !back.snoozed_until, 'back as unread');
  await page.waitForFunction(() => document.querySelector('#bell .nudge-host').shadowRoot.querySelector('.nudge-bell').getAttribute('aria-label') === 'Notifications, 2 unread', null, { timeout: WAIT });
  step('the inbox page snoozed an item and brought it back unread; the other tab\'s badge followed live');

  await inboxPage.getByLabel('Select all shown').check();
  await inboxPage.getByRole('button', { name: 'Archive', exact: true }).click();
  await eventually('the archived items leave the list', async () => (await rows.count()) === 0);
  const archived = await api('GET', '/v1/me/notifications?archived=true');
  check(archived.items.length === 2, 'both are archived in the API');
  await page.waitForFunction(() => document.querySelector('#bell .nudge-host').shadowRoot.querySelector('.nudge-bell').getAttribute('aria-label') === 'Notifications, no unread', null, { timeout: WAIT });
  step('the inbox page filtered, searched and bulk-archived; the other tab\'s badge followed live');

  // A search that matches nothing in a long history. The server examines a
  // bounded number of items per request (2,000) and answers an empty page
  // with a cursor when that runs out, so "Nothing here." is only true once
  // the last page (no cursor) is in; until then the list offers more.
  const LONG_HISTORY = 4050;
  for (let sent = 0; sent < LONG_HISTORY; sent += 100) {
    const batch = [];
    for (let i = sent; i < Math.min(LONG_HISTORY, sent + 100); i++) {
      batch.push({ type: 'track', userId: USER, event: 'Comment Posted', messageId: `long-history-${i}`, properties: { author: 'Bob', text: `message ${i}` } });
    }
    await agent('/v1/batch', { batch });
  }
  await eventually(`the inbox holds ${LONG_HISTORY} more comments`, async () => (await api('GET', '/v1/me/notifications/counts')).unread >= LONG_HISTORY, 180000);
  const nothingHere = inboxPage.locator('.nudge-empty');
  const loadMore = inboxPage.locator('.nudge-more');
  await inboxPage.getByLabel('Search', { exact: true }).fill('words in no message');
  // The first page loads, the visible "Load more" fetches the second on its
  // own, and the scan pauses after 4,000 items with the button still shown.
  await eventually('an unfinished search offers more, not "Nothing here."', async () => (await loadMore.isVisible()) && (await nothingHere.isHidden()) && (await rows.count()) === 0);
  // A click while the second page is still loading is ignored: click until
  // the scan ends.
  await eventually('the last page says "Nothing here."', async () => {
    if (await loadMore.isVisible()) await loadMore.click({ timeout: 1000 });
    return (await nothingHere.isVisible()) && (await loadMore.isHidden());
  });
  check((await rows.count()) === 0, 'no item matches');
  step(`a search through ${LONG_HISTORY} items showed "Nothing here." only after its last page`);
  await inboxPage.getByLabel('Search', { exact: true }).fill('');

  // The preferences page saves a change.
  const prefsPage = await context.newPage();
  watch(prefsPage, 'preferences page');
  await prefsPage.goto(`${CP}/inbox/preferences#access_token=${encodeURIComponent(TOKEN)}`);
  await prefsPage.locator('input[data-type="comment"][data-channel="in_app"]').waitFor({ timeout: WAIT });
  check(await prefsPage.locator('input[data-type="security_alert"][data-channel="in_app"]').isDisabled(), 'a critical type is locked');
  check(await prefsPage.locator('input[data-type="security_alert"][data-channel="in_app"]').isChecked(), 'a critical type stays on');
  await prefsPage.locator('input[data-type="comment"][data-channel="in_app"]').uncheck();
  await prefsPage.locator('select[data-frequency="newsletter"]').selectOption('daily');
  await prefsPage.getByLabel('Hold notifications during quiet hours').check();
  await prefsPage.getByLabel('From', { exact: true }).fill('22:30');
  await prefsPage.getByLabel('Until', { exact: true }).fill('06:45');
  await prefsPage.getByLabel('Time zone', { exact: true }).selectOption('Europe/Berlin');
  await prefsPage.getByRole('button', { name: 'Save', exact: true }).click();
  await prefsPage.getByText('Preferences saved.').waitFor({ timeout: WAIT });
  const prefsShot = SCREENSHOT.replace(/\.png$/, '-preferences.png');
  await prefsPage.screenshot({ path: prefsShot, fullPage: true });
  step(`screenshot: ${prefsShot}`);
  const prefs = await api('GET', '/v1/me/preferences');
  check(prefs.types.comment.channels.in_app === false, `comment in-app is off: ${JSON.stringify(prefs)}`);
  check(prefs.types.newsletter.frequency === 'daily', 'newsletter is daily');
  check(prefs.quiet_hours && prefs.quiet_hours.start === '22:30' && prefs.quiet_hours.end === '06:45' && prefs.quiet_hours.timezone === 'Europe/Berlin', `quiet hours saved: ${JSON.stringify(prefs.quiet_hours)}`);
  check(!prefs.types.security_alert, 'nothing stored for the critical type');
  step('the preferences page saved: GET /v1/me/preferences agrees');

  // Topics: both are listed with when they were followed; Leave takes one
  // off (the API agrees), and one already left elsewhere goes quietly.
  const topicRows = prefsPage.locator('.nudge-topic');
  await eventually('the page lists both topics', async () => (await topicRows.count()) === 2);
  const listed = await topicRows.locator('.nudge-topic-name').allTextContents();
  check(JSON.stringify(listed) === JSON.stringify(TOPICS), `the topics, by name: ${listed}`);
  check(!Number.isNaN(Date.parse(await topicRows.first().locator('time').getAttribute('datetime'))), 'with when they were followed');
  const [kept, left] = TOPICS;
  await prefsPage.getByRole('button', { name: `Leave topic ${left}`, exact: true }).click();
  await prefsPage.getByText(`You left ${left}.`).waitFor({ timeout: WAIT });
  check((await topicRows.count()) === 1 && (await topicRows.first().getAttribute('data-topic')) === kept, 'its row is gone');
  check(await prefsPage.evaluate(() => document.querySelector('.nudge-host').shadowRoot.activeElement?.getAttribute('aria-label')) === `Leave topic ${kept}`, 'focus moved to the next Leave button');
  const mine = await api('GET', '/v1/me/topics');
  check(mine.topics.length === 1 && mine.topics[0].topic === kept, `GET /v1/me/topics agrees: ${JSON.stringify(mine)}`);
  await api('DELETE', `/v1/me/topics/${encodeURIComponent(kept)}`);
  provoked.add(`${CP}/v1/me/topics/${encodeURIComponent(kept)}`);
  await prefsPage.keyboard.press('Enter');
  await prefsPage.getByText(`You had already left ${kept}.`).waitFor({ timeout: WAIT });
  check((await topicRows.count()) === 0, 'the row went anyway');
  check(await prefsPage.getByText("You don't follow any topics.").isVisible(), 'the empty state shows');
  check(!(await prefsPage.getByRole('alert').allTextContents()).some((text) => text), 'no error shown');
  step('the preferences page listed both topics and left them (one already gone: 404)');

  // Phone width: the dropdown stays on screen.
  await page.setViewportSize({ width: 375, height: 700 });
  await bell.click();
  const box = await page.locator('#bell .nudge-panel').boundingBox();
  check(box && box.x >= 0 && box.x + box.width <= 375, `the dropdown fits a phone: ${JSON.stringify(box)}`);
  await page.keyboard.press('Escape');
  step('the dropdown fits a 375px screen');

  // A URL's fragment (`/inbox#access_token=…`) never leaves the browser;
  // its query does.
  const leaked = urls.filter((url) => new URL(url).search.includes('access_token') || url.includes(TOKEN.split('.')[2]) && !url.includes('#'));
  check(leaked.length === 0, `no request URL carries the user's token:\n${leaked.join('\n')}`);
  const streams = urls.filter((url) => /\/v1\/me\/(stream|events)\?/.test(url));
  check(streams.length > 0 && streams.every((url) => new URL(url).searchParams.has('ticket')), `the live stream opens with a ticket: ${streams.join(' ')}`);
  step(`no URL carried the token (${urls.length} requests); ${streams.length} stream(s) opened with a ticket`);

  check(problems.length === 0, `no page errors or CSP violations:\n${problems.join('\n')}`);
  step('all checks passed');
} catch (error) {
  console.error(error.stack || String(error));
  if (problems.length) console.error(problems.join('\n'));
  process.exitCode = 1;
} finally {
  await browser.close();
}
