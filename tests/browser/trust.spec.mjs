// Issue 15 in a real browser: plain Node + playwright-core driving Debian's
// chromium. Started by tests/tests/browser_trust.rs, which runs the control
// plane and the agent and serves an application's page on another origin
// than the agent's. From that page, a script holding the public write key
// tries what the issue warns about, with the browser adding its own
// `Origin`; this script reports what the page could see, as one JSON line
// on stdout, and the Rust test checks the agent's side.
import { createRequire } from 'node:module';

const env = (name) => {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set`);
  return value;
};
const CHROMIUM = env('NUDGE_TEST_CHROMIUM');
const PLAYWRIGHT = env('NUDGE_TEST_PLAYWRIGHT');
const HOST_URL = env('NUDGE_HOST_URL');
const AGENT = env('NUDGE_AGENT_URL').replace(/\/$/, '');
const USER = env('NUDGE_USER');

const require = createRequire(import.meta.url);
const { chromium } = require(PLAYWRIGHT);

const browser = await chromium.launch({ executablePath: CHROMIUM, args: ['--no-sandbox'] });
try {
  const page = await browser.newPage();
  await page.goto(HOST_URL);
  const seen = await page.evaluate(async ({ agent, user }) => {
    // What the page can read of one fetch: the status and body, or the
    // network error a CORS refusal is to a page.
    async function attempt(path, contentType, body) {
      try {
        const response = await fetch(agent + path, {
          method: 'POST',
          headers: { 'Content-Type': contentType },
          body: JSON.stringify(body),
        });
        return { status: response.status, body: await response.json() };
      } catch (error) {
        return { error: error.name };
      }
    }
    const writeKey = 'public-key';
    return {
      origin: location.origin,
      // analytics.js's way: text/plain, no preflight.
      address: await attempt('/v1/identify', 'text/plain', {
        userId: user, writeKey, traits: { email: 'attacker@evil.example' },
      }),
      notifySimple: await attempt('/v1/notify', 'text/plain', {
        userId: user, writeKey, type: 'account_alert', title: 'Hi', channels: ['in_app'],
      }),
      // JSON needs a preflight, which /v1/notify refuses.
      notifyJson: await attempt('/v1/notify', 'application/json', {
        userId: user, writeKey, type: 'account_alert', title: 'Hi', channels: ['in_app'],
      }),
      visit: await attempt('/v1/page', 'text/plain', { userId: user, writeKey, name: 'Home' }),
    };
  }, { agent: AGENT, user: USER });
  console.log(JSON.stringify(seen));
} catch (error) {
  console.error(error.stack || String(error));
  process.exitCode = 1;
} finally {
  await browser.close();
}
