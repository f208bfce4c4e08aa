/**
 * The dashboard in a real browser: headless Chromium (Debian's package) driven by playwright-core.
 * Screenshots go to test-output/.
 */
import assert from 'node:assert/strict';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { after, before, describe, it } from 'node:test';
import { chromium, type Browser, type Locator, type Page, type Route } from 'playwright-core';
import { cleanup, keepAliveClient, needsTool, request, ROOT, startServer, type RunningServer } from './helpers.js';

/** The page script's flag: a refresh (fetches, then a redraw) is under way. */
declare const busy: boolean;

const skip = needsTool('chromium', 'chromium');
const SHOTS = join(ROOT, 'test-output');
const XSS = '<img src=x onerror=alert(1)>';

let browser: Browser;
before(async () => {
  if (skip) return;
  mkdirSync(SHOTS, { recursive: true });
  browser = await chromium.launch({ executablePath: '/usr/bin/chromium', args: ['--no-sandbox', '--disable-gpu'] });
});
after(() => browser?.close());

/** A page that fails the test on any dialog it did not expect, on script errors and on anything
 * its Content-Security-Policy blocked. `prepare` runs before the page loads. */
async function open(
  url: string,
  opts: { viewport?: { width: number; height: number }; prepare?: (page: Page) => Promise<unknown> } = {},
): Promise<{ page: Page; problems: string[] }> {
  const page = await browser.newPage({ viewport: opts.viewport ?? { width: 1280, height: 900 } });
  const problems: string[] = [];
  page.on('pageerror', (err) => problems.push(`script error: ${err.message}`));
  page.on('console', (m) => void (m.type() === 'error' && /Content Security Policy/.test(m.text()) && problems.push(`CSP: ${m.text()}`)));
  page.on('dialog', (d) => {
    if (d.type() === 'confirm') return void d.accept();
    problems.push(`unexpected ${d.type()}: ${d.message()}`);
    void d.dismiss();
  });
  await opts.prepare?.(page);
  await page.goto(url);
  return { page, problems };
}

const put = (port: number, name: string, data: string) => request(port, 'GET', `/?name=${encodeURIComponent(name)}&opt=put&data=${encodeURIComponent(data)}`);

describe('dashboard', { skip }, () => {
  let server: RunningServer;
  before(async () => {
    server = await startServer();
  });
  after(async () => {
    await server.stop();
    cleanup(server.dir);
  });

  it('lists queues with their counts, updates live, charts rates, and keeps names and messages inert', async () => {
    for (const m of ['a', 'b', 'c']) await put(server.port, 'orders', m);
    await put(server.port, XSS, '<script>window.__xss = 1</script><img src=x onerror="window.__xss = 2">');
    const { page, problems } = await open(`http://127.0.0.1:${server.port}/dashboard`);
    const row = page.locator('tr[data-queue="orders"]');
    await row.waitFor();
    assert.equal(await row.locator('td.unread').textContent(), '3');
    assert.match((await page.locator('#facts').textContent())!, /^v\d+\.\d+\.\d+ · up .* · LMDB · durable \(ack after flush\) · \d+ connections? · 1 worker$/);

    // Puts and gets while the page watches: the count follows and the rates show.
    const client = keepAliveClient(server.port, 4);
    const until = Date.now() + 3000;
    while (Date.now() < until) {
      await client.send('/?name=orders&opt=put&data=more');
      await client.send('/?name=orders&opt=put&data=more');
      await client.send('/?name=orders&opt=get');
      await sleep(5);
    }
    client.close();
    const unread = JSON.parse((await request(server.port, 'GET', '/?name=orders&opt=status_json')).body.toString()).unread;
    await page.waitForFunction((n) => document.querySelector('tr[data-queue="orders"] td.unread')?.textContent === n.toLocaleString('en'), unread, {
      timeout: 5000,
    });
    const rateCells = await row.locator('td').allTextContents();
    assert.ok(rateCells.length >= 10);
    const points = await row.locator('svg polyline').first().getAttribute('points');
    assert.ok(points && new Set(points.split(' ').map((p) => p.split(',')[1])).size > 1, `the row's chart is flat: ${points}`);

    // The XSS probe is shown as text and nothing of it runs.
    const xssRow = page.locator('tr[data-queue="<img src=x onerror=alert(1)>"]');
    assert.equal(await xssRow.locator('td.name').textContent(), XSS);
    assert.equal(await page.locator('img').count(), 0);
    await page.screenshot({ path: join(SHOTS, 'dashboard.png'), fullPage: true });

    await xssRow.locator('a').click();
    await page.locator('#messages tbody tr').first().waitFor();
    assert.equal(await page.locator('#messages td.msg').first().textContent(), '<script>window.__xss = 1</script><img src=x onerror="window.__xss = 2">');
    assert.equal(await page.evaluate(() => (window as unknown as { __xss?: number }).__xss), undefined);
    assert.equal(await page.locator('img').count(), 0);
    assert.deepEqual(problems, []);
    await page.close();
  });

  it('a queue page shows messages by position, read and unread, and its actions work', async () => {
    for (const m of ['one', 'two', 'three']) await put(server.port, 'q-page', m);
    await request(server.port, 'GET', '/?name=q-page&opt=get');
    const { page, problems } = await open(`http://127.0.0.1:${server.port}/dashboard#/q/q-page`);
    await page.locator('#messages tbody tr').nth(2).waitFor();
    assert.deepEqual(
      await page
        .locator('#messages tbody tr')
        .evaluateAll((rows) => rows.map((r) => [r.children[0]!.textContent, r.children[1]!.textContent, r.children[2]!.textContent])),
      [
        ['1', 'read', 'one'],
        ['2', 'unread', 'two'],
        ['3', 'unread', 'three'],
      ],
    );
    assert.equal(await page.locator('#queue-unread').textContent(), '2');

    // Typing while a redraw is under way: the redraw, done after its fetches, leaves the form as it is.
    let release = () => {};
    const held = new Promise<void>((r) => (release = r));
    const asked = new Promise<void>((seen) =>
      page.route(
        /[?&]opt=view/,
        async (route) => {
          seen();
          await held;
          await route.continue();
        },
        { times: 1 },
      ),
    );
    await asked;
    await page.fill('#put-input', 'from the browser');
    release();
    await page.waitForFunction(() => !busy); // the redraw that was held is over
    assert.equal(await page.inputValue('#put-input'), 'from the browser');
    await page.click('#put-button');
    await page.waitForFunction(() => document.querySelector('#queue-unread')?.textContent === '3');
    assert.equal((await request(server.port, 'GET', '/?name=q-page&opt=view&pos=4')).body.toString(), 'from the browser');

    await page.fill('#maxqueue-input', '500');
    await page.click('#maxqueue-button');
    await page.waitForFunction(() => document.querySelector('#queue-maxqueue')?.textContent === '500');
    assert.match((await page.locator('#notice').textContent())!, /HTTPSQS_MAXQUEUE_OK/);
    assert.equal(await page.locator('#notice.ok').count(), 1);
    // A refusal is not shown as a success: 1 is below the least maxqueue.
    await page.fill('#maxqueue-input', '1');
    await page.click('#maxqueue-button');
    await page.waitForFunction(() => /maxqueue: HTTPSQS_ERROR/.test(document.querySelector('#notice')?.textContent ?? ''));
    assert.equal(await page.locator('#notice.ok').count(), 0, 'a refused maxqueue shown as a success');
    await page.screenshot({ path: join(SHOTS, 'dashboard-queue.png'), fullPage: true });

    await page.click('#reset-button'); // the confirmation is accepted
    await page.waitForFunction(() => document.querySelector('#queue-unread')?.textContent === '0');
    assert.match((await request(server.port, 'GET', '/?name=q-page&opt=status_json')).body.toString(), /"maxqueue":1000000,"putpos":0/);
    assert.deepEqual(problems, []);
    await page.close();
  });

  it('shows leased, delayed and dead counts in the table (sortable) and on the queue page', async () => {
    const port = server.port;
    const ask = async (query: string) => (await request(port, 'GET', `/?name=dlq-page&${query}`)).body.toString();
    assert.equal(await ask('opt=maxdeliveries&num=1'), 'HTTPSQS_MAXDELIVERIES_OK');
    await ask('opt=put&data=later&delay=600');
    await ask('opt=put&data=poison');
    const poison = await request(port, 'GET', '/?name=dlq-page&opt=get&lease=60');
    assert.equal(await ask(`opt=nack&pos=${poison.headers.pos}`), 'HTTPSQS_NACK_OK');
    await ask('opt=put&data=held');
    await ask('opt=get&lease=60');
    const { page, problems } = await open(`http://127.0.0.1:${port}/dashboard`);
    const row = page.locator('tr[data-queue="dlq-page"]');
    await row.waitFor();
    const cells = async () => Promise.all(['unread', 'leased', 'delayed', 'dead'].map((c) => row.locator(`td.${c}`).textContent()));
    assert.deepEqual(await cells(), ['0', '1', '1', '1']);
    // Found and read in one turn of the page: a refresh replaces the rows, and a cell it has
    // detached has no computed style.
    const deadColor = await page.evaluate(() => {
      const cell = document.querySelector('tr[data-queue="dlq-page"] td.dead');
      return cell ? getComputedStyle(cell).color : 'no cell';
    });
    assert.equal(deadColor, 'rgb(180, 35, 24)', 'dead letters show in red');
    assert.equal(await page.locator('#total-dead').textContent(), '1');
    await page.locator('#queues th', { hasText: 'Dead' }).click(); // most dead letters first
    await page.waitForFunction(() => document.querySelector('#queues tbody tr')?.getAttribute('data-queue') === 'dlq-page');

    await row.locator('a').click();
    await page.locator('#queue-dead').waitFor();
    const cards = async () => Promise.all(['leased', 'delayed', 'dead', 'maxdeliveries'].map((c) => page.locator(`#queue-${c}`).textContent()));
    assert.deepEqual(await cards(), ['1', '1', '1', '1']);
    await page.locator('#dead-letters tr[data-dead] td.msg', { hasText: 'poison' }).waitFor();
    await page.screenshot({ path: join(SHOTS, 'dashboard-dead.png'), fullPage: true });
    // From the page: a redrive makes the dead letter deliverable again (waiting outside the ring).
    await page.click('#redrive-button');
    await page.waitForFunction(() => document.querySelector('#queue-dead')?.textContent === '0');
    assert.equal(await page.locator('#dead-letters').count(), 0, 'no dead letters left to list');
    await page.fill('#maxdeliveries-input', '0');
    await page.click('#maxdeliveries-button');
    await page.waitForFunction(() => document.querySelector('#queue-maxdeliveries')?.textContent === 'off');
    assert.deepEqual(await cards(), ['1', '2', '0', 'off']);
    // A dead letter discarded from the page is gone for good.
    assert.equal(await ask('opt=get'), 'poison', 'the redriven one first');
    await ask('opt=maxdeliveries&num=1');
    await ask('opt=put&data=junk');
    const junk = await request(port, 'GET', '/?name=dlq-page&opt=get&lease=60');
    assert.equal(junk.body.toString(), 'junk');
    assert.equal(await ask(`opt=nack&pos=${junk.headers.pos}`), 'HTTPSQS_NACK_OK');
    const discard = page.locator('#dead-letters tr[data-dead] button', { hasText: 'Discard' });
    await discard.waitFor();
    await discard.click(); // the confirmation is accepted
    await page.waitForFunction(() => document.querySelector('#queue-dead')?.textContent === '0');
    assert.equal(await ask('opt=dead'), '[]\n');
    assert.deepEqual(problems, []);
    await page.close();
  });

  it('tells apart and acts on queues whose names are not UTF-8', async () => {
    // Two names whose bytes differ but read the same as UTF-8 (each invalid byte becomes U+FFFD).
    const put1 = (raw: string, data: string) => request(server.port, 'GET', `/?name=${raw}&opt=put&data=${data}`);
    await put1('%FFbin', 'first');
    for (const m of ['x', 'y']) await put1('%FEbin', m);
    const { page, problems } = await open(`http://127.0.0.1:${server.port}/dashboard`);
    const rows = page.locator('tr[data-queue="\uFFFDbin"]');
    await rows.nth(1).waitFor();
    const counts = await rows.locator('td.unread').allTextContents();
    assert.deepEqual([...counts].sort(), ['1', '2']);
    await rows.nth(counts.indexOf('2')).locator('a').click();
    await page.waitForFunction(() => document.querySelector('#queue-unread')?.textContent === '2');
    assert.deepEqual(await page.locator('#messages td.msg').allTextContents(), ['x', 'y']);
    await page.fill('#put-input', 'z');
    await page.click('#put-button');
    await page.waitForFunction(() => document.querySelector('#queue-unread')?.textContent === '3');
    assert.equal((await request(server.port, 'GET', '/?name=%FEbin&opt=view&pos=3')).body.toString(), 'z');
    assert.match((await request(server.port, 'GET', '/?name=%FFbin&opt=status_json')).body.toString(), /"putpos":1,/);
    assert.deepEqual(problems, []);
    await page.close();
  });

  it('a click is not lost to a refresh that comes between the press and the release', async () => {
    await put(server.port, 'pressed', 'm');
    const { page, problems } = await open(`http://127.0.0.1:${server.port}/dashboard`);
    const link = page.locator('tr[data-queue="pressed"] a');
    await link.waitFor();
    // From the search box: the press moves the focus away from it (a blur, which is not a release).
    await page.focus('#search');
    // A refresh may replace the link between finding and measuring it: measure the new one.
    let box = await link.boundingBox();
    for (let i = 0; !box && i < 20; i++) box = await link.boundingBox();
    assert.ok(box, 'the link has a box');
    await page.mouse.move(box.x + box.width / 2, box.y + box.height / 2);
    await page.mouse.down();
    // Held over two refreshes (one a second): a redraw then would put a new link under the pointer,
    // and the release on it would make no click.
    await sleep(2500);
    await page.mouse.up();
    await page.locator('#queue-unread').waitFor({ timeout: 5000 });
    assert.match(page.url(), /#\/q\/pressed$/);
    assert.deepEqual(problems, []);
    await page.close();
  });

  it('text selected to be copied stays selected across refreshes; once it goes, the page is live again', async () => {
    await put(server.port, 'copy-me', 'm');
    const { page, problems } = await open(`http://127.0.0.1:${server.port}/dashboard`);
    const row = page.locator('tr[data-queue="copy-me"]');
    await row.waitFor();
    await page.evaluate(() => {
      const cell = document.querySelector('tr[data-queue="copy-me"] td.name')!;
      getSelection()!.selectAllChildren(cell);
    });
    await sleep(2500); // two refreshes
    assert.equal(await page.evaluate(() => getSelection()!.toString()), 'copy-me');
    await page.evaluate(() => getSelection()!.removeAllRanges());
    await put(server.port, 'copy-me', 'n');
    await page.waitForFunction(() => document.querySelector('tr[data-queue="copy-me"] td.unread')?.textContent === '2');
    assert.deepEqual(problems, []);
    await page.close();
  });

  it('a selection made on a queue page while a refresh fetches its messages stays selected', async () => {
    await put(server.port, 'copy-view', 'm');
    const { page, problems } = await open(`http://127.0.0.1:${server.port}/dashboard#/q/copy-view`);
    await page.locator('#queue-name').waitFor();
    // The next refresh's fetch of the messages is held until the text is selected.
    let held!: (route: Route) => void;
    const fetching = new Promise<Route>((r) => (held = r));
    const messages = (url: URL) => url.searchParams.get('opt') === 'view';
    await page.route(messages, (route) => held(route));
    const route = await fetching;
    await page.evaluate(() => getSelection()!.selectAllChildren(document.getElementById('queue-name')!));
    await route.continue();
    await page.unroute(messages);
    await sleep(1500); // the held refresh ends, and one more comes
    assert.equal(await page.evaluate(() => getSelection()!.toString()), 'copy-view');
    assert.deepEqual(problems, []);
    await page.close();
  });

  it('a link or button that has the keyboard focus has it again after each refresh', async () => {
    await put(server.port, 'tabbed', 'm');
    const { page, problems } = await open(`http://127.0.0.1:${server.port}/dashboard`);
    await page.locator('tr[data-queue="tabbed"] a').waitFor();
    await page.focus('tr[data-queue="tabbed"] a');
    await sleep(2500); // two refreshes, each a new link
    assert.equal(await page.evaluate(() => document.activeElement?.getAttribute('href')), '#/q/tabbed');
    // And the keyboard goes on from there: Enter opens it.
    await page.keyboard.press('Enter');
    await page.locator('#queue-unread').waitFor();
    assert.match(page.url(), /#\/q\/tabbed$/);
    assert.deepEqual(problems, []);
    await page.close();
  });

  it('the columns can be sorted from the keyboard', async () => {
    await put(server.port, 'sorted-by-keys', 'm');
    const { page, problems } = await open(`http://127.0.0.1:${server.port}/dashboard`);
    await page.locator('tr[data-queue="sorted-by-keys"]').waitFor();
    await page.focus('#search');
    await page.keyboard.press('Tab');
    assert.equal(await page.evaluate(() => document.activeElement?.textContent), 'Queue', 'Tab goes from the search box to the first column');
    await page.keyboard.press('Enter');
    await page.waitForFunction(() => document.querySelector('#queues th.sorted')?.textContent === 'Queue');
    assert.equal(await page.locator('#queues th.sorted').getAttribute('aria-sort'), 'ascending');
    // The focus stays on the header through the redraw: Enter again turns the order round.
    await page.keyboard.press('Enter');
    await page.waitForFunction(() => document.querySelector('#queues th.sorted')?.getAttribute('aria-sort') === 'descending');
    assert.deepEqual(problems, []);
    await page.close();
  });

  it('reads well on a phone', async () => {
    const { page, problems } = await open(`http://127.0.0.1:${server.port}/dashboard`, { viewport: { width: 390, height: 844 } });
    await page.locator('tr[data-queue="orders"]').waitFor();
    const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
    assert.ok(overflow <= 0, `the page is ${overflow}px wider than the phone`);
    await page.screenshot({ path: join(SHOTS, 'dashboard-phone.png'), fullPage: true });
    assert.deepEqual(problems, []);
    await page.close();
  });

  it('a queue page with a 256-byte name is no wider than the window', async () => {
    const long = 'L'.repeat(256);
    await put(server.port, long, 'm');
    for (const width of [390, 1024]) {
      const { page, problems } = await open(`http://127.0.0.1:${server.port}/dashboard#/q/${long}`, { viewport: { width, height: 900 } });
      await page.locator('#queue-name').waitFor();
      assert.equal(await page.locator('#queue-name').textContent(), long);
      const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
      assert.ok(overflow <= 0, `the page is ${overflow}px wider than the window at ${width}px`);
      assert.deepEqual(problems, []);
      await page.close();
    }
  });

  it('a queue page with dead letters is no wider than a phone', async () => {
    const ask = async (query: string) => (await request(server.port, 'GET', `/?name=dead-phone&${query}`)).body.toString();
    await ask('opt=maxdeliveries&num=1');
    await ask('opt=put&data=poison');
    const poison = await request(server.port, 'GET', '/?name=dead-phone&opt=get&lease=60');
    assert.equal(await ask(`opt=nack&pos=${poison.headers.pos}`), 'HTTPSQS_NACK_OK');
    const { page, problems } = await open(`http://127.0.0.1:${server.port}/dashboard#/q/dead-phone`, { viewport: { width: 375, height: 800 } });
    await page.locator('#dead-letters tr[data-dead]').waitFor();
    const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
    assert.ok(overflow <= 0, `the page is ${overflow}px wider than the phone`);
    assert.deepEqual(problems, []);
    await page.close();
  });

  it('at 1024 px the queue table fits its panel even with a long name, which its link holds in full', async () => {
    const long = 'M'.repeat(200);
    await put(server.port, long, 'm');
    const { page, problems } = await open(`http://127.0.0.1:${server.port}/dashboard`, { viewport: { width: 1024, height: 800 } });
    await page.locator(`tr[data-queue="${long}"]`).waitFor();
    assert.equal(await page.locator(`tr[data-queue="${long}"] a`).getAttribute('title'), long);
    const over = await page.evaluate(() => {
      const table = document.getElementById('queues')!;
      return table.scrollWidth - table.parentElement!.clientWidth;
    });
    assert.ok(over <= 0, `the table is ${over}px wider than its panel: the rates are out of sight`);
    assert.deepEqual(problems, []);
    await page.close();
  });

  it('stays usable with 10,000 queues: search, sort and paging', async () => {
    const clients = Array.from({ length: 8 }, () => keepAliveClient(server.port, 1));
    await Promise.all(
      clients.map(async (c, k) => {
        for (let i = k; i < 10_000; i += clients.length) await c.send(`/?name=bulk-${String(i).padStart(5, '0')}&opt=put&data=x`);
      }),
    );
    for (const c of clients) c.close();
    const { page, problems } = await open(`http://127.0.0.1:${server.port}/dashboard`);
    await page.waitForFunction(() => Number(document.querySelector('#total-queues')?.textContent?.replace(/,/g, '')) >= 10_000, undefined, { timeout: 15_000 });
    assert.equal(await page.locator('#queues tbody tr').count(), 50);
    assert.match((await page.locator('.pager').first().textContent())!, /page 1 of 2\d\d/);
    // Typed key by key, as a person does: the box keeps its focus and caret through re-renders.
    await page.click('#search');
    await page.keyboard.type('bulk-0424', { delay: 30 });
    await page.waitForFunction(() => document.querySelectorAll('#queues tbody tr').length === 10);
    await page.keyboard.type('2', { delay: 30 });
    await page.waitForFunction(() => document.querySelectorAll('#queues tbody tr').length === 1);
    await sleep(1500); // a refresh or two while the box has focus
    assert.equal(await page.inputValue('#search'), 'bulk-04242');
    assert.equal(await page.evaluate(() => document.activeElement?.id), 'search');
    // An edit in the middle: each key redraws the box, and the caret stays where the keys put it.
    await page.keyboard.press('ArrowLeft');
    await page.keyboard.press('ArrowLeft');
    await page.keyboard.type('9');
    await page.keyboard.press('Backspace');
    await page.keyboard.type('7');
    assert.equal(await page.inputValue('#search'), 'bulk-042742');
    await page.fill('#search', '');
    await page.click('#queues th:first-child'); // sort by name
    await page.waitForFunction(() => document.querySelector('#queues tbody tr')?.getAttribute('data-queue') === '<img src=x onerror=alert(1)>');
    assert.deepEqual(problems, []);
    await page.close();
  });
});

describe('dashboard with passwords', { skip }, () => {
  it('asks for the password, and for the admin password before an admin action', async () => {
    const server = await startServer({ args: ['-a', 'user-pass', '--admin-auth', 'admin-pass'] });
    try {
      await request(server.port, 'GET', '/?name=guarded&opt=put&data=x&auth=user-pass');
      assert.equal((await request(server.port, 'GET', '/dashboard/info')).status, 401);
      const { page, problems } = await open(`http://127.0.0.1:${server.port}/dashboard`);
      await page.locator('#password-input').waitFor();
      assert.equal(await page.locator('#login-refused').count(), 0, 'no password tried yet');
      // A wrong password is said to be wrong, not just asked for again.
      await page.fill('#password-input', 'not-it');
      await page.press('#password-input', 'Enter');
      await page.locator('#login-refused').waitFor();
      await page.fill('#password-input', 'user-pass');
      await page.press('#password-input', 'Enter');
      await page.locator('tr[data-queue="guarded"]').waitFor();
      await page.locator('tr[data-queue="guarded"] a').click();
      await page.locator('#reset-button').click();
      await page.locator('#admin-input').waitFor();
      assert.equal(await page.locator('#admin-refused').count(), 0, 'no admin password tried yet');
      assert.match((await request(server.port, 'GET', '/?name=guarded&opt=status_json&auth=user-pass')).body.toString(), /"putpos":1/);
      // A wrong one is said to be wrong when the action is tried again with it.
      await page.fill('#admin-input', 'not-it');
      await page.press('#admin-input', 'Enter');
      await page.locator('#notice', { hasText: 'Admin password set' }).waitFor();
      await page.click('#reset-button');
      await page.locator('#admin-refused').waitFor();
      assert.equal(await page.locator('#notice').count(), 0, 'no "Admin password set" left up');
      assert.match((await request(server.port, 'GET', '/?name=guarded&opt=status_json&auth=user-pass')).body.toString(), /"putpos":1/);
      await page.fill('#admin-input', 'admin-pass');
      await page.press('#admin-input', 'Enter');
      await page.click('#reset-button');
      await page.waitForFunction(() => document.querySelector('#queue-unread')?.textContent === '0');
      assert.match((await request(server.port, 'GET', '/?name=guarded&opt=status_json&auth=user-pass')).body.toString(), /"putpos":0/);
      assert.deepEqual(problems, []);
      await page.close();
    } finally {
      await server.stop();
      cleanup(server.dir);
    }
  });
});

describe('dashboard with a password in its address', { skip }, () => {
  it('takes auth= from the address, then takes it out of the address and the history', async () => {
    const server = await startServer({ args: ['-a', 'url-pass'] });
    try {
      await request(server.port, 'GET', '/?name=linked&opt=put&data=x&auth=url-pass');
      const { page, problems } = await open(`http://127.0.0.1:${server.port}/dashboard?auth=url-pass&x=1#/q/linked`);
      await page.locator('#queue-name').waitFor();
      assert.equal(await page.locator('#queue-name').textContent(), 'linked');
      assert.equal(page.url(), `http://127.0.0.1:${server.port}/dashboard?x=1#/q/linked`);
      await page.goBack();
      assert.equal(page.url(), 'about:blank', 'the address with the password was replaced, not kept behind');
      // The tab keeps it: the page works without it in the address.
      await page.goto(`http://127.0.0.1:${server.port}/dashboard`);
      await page.locator('tr[data-queue="linked"]').waitFor();
      assert.deepEqual(problems, []);
      await page.close();
    } finally {
      await server.stop();
      cleanup(server.dir);
    }
  });
});

/** The y of each point of a chart's polyline (the chart's data, scaled: a larger rate is higher). */
async function ys(line: Locator): Promise<number[]> {
  const points = (await line.getAttribute('points')) ?? '';
  return points ? points.split(' ').map((p) => Number(p.split(',')[1])) : [];
}

/** A chart has one point per bucket of the server's history and shows some puts and some gets. */
async function assertDrawn(svg: Locator, height: number, what: string) {
  const [put, get] = [await ys(svg.locator('polyline').nth(0)), await ys(svg.locator('polyline').nth(1))];
  assert.equal(put.length, 180, `${what}: a point per 5 s over 15 minutes`);
  assert.equal(get.length, 180, what);
  const floor = height - 2; // where a rate of 0 is drawn
  assert.ok(
    put.some((y) => y < floor),
    `${what}: no puts drawn`,
  );
  assert.ok(
    get.some((y) => y < floor),
    `${what}: no gets drawn`,
  );
}

const sum = (xs: number[]) => xs.reduce((a, b) => a + b, 0);

for (const workers of [1, 2]) {
  describe(`dashboard history with ${workers} worker${workers > 1 ? 's' : ''}`, { skip }, () => {
    let server: RunningServer;
    before(async () => {
      server = await startServer({ args: ['--workers', String(workers)] });
    });
    after(async () => {
      await server.stop();
      cleanup(server.dir);
    });

    it("a page opened after traffic draws its charts at once, from the server's history", async () => {
      // Each request on a connection of its own: under --workers they are spread over the workers.
      for (let i = 0; i < 12; i++) await put(server.port, 'hist', `m${i}`);
      for (let i = 0; i < 5; i++) assert.match((await request(server.port, 'GET', '/?name=hist&opt=get')).body.toString(), /^m\d+$/);
      // Whichever worker answers, the history is the sum over all of them.
      for (let i = 0; i < 4; i++) {
        const h = JSON.parse((await request(server.port, 'GET', '/dashboard/history')).body.toString());
        assert.deepEqual([sum(h.total.put), sum(h.total.get)], [12, 5]);
        const q = h.queues.find((x: { name: string }) => x.name === 'hist');
        assert.deepEqual([sum(q.put), sum(q.get)], [12, 5]);
        assert.equal(h.total.put.length, 180);
      }

      // Only the page's first poll of the queues gets through: its charts cannot come from rates
      // between polls, and nothing is redrawn after the first answer.
      let polls = 0;
      const { page, problems } = await open(`http://127.0.0.1:${server.port}/dashboard`, {
        prepare: (p) => p.route(/[?&]opt=list/, (route) => (polls++ === 0 ? route.continue() : route.abort())),
      });
      const row = page.locator('tr[data-queue="hist"]');
      await row.waitFor();
      assert.match((await page.locator('#facts').textContent())!, new RegExp(`· ${workers} workers?$`));
      await assertDrawn(page.locator('#throughput svg'), 120, 'throughput');
      await assertDrawn(row.locator('svg'), 24, "the queue's row");
      await page.locator('#throughput svg').screenshot({ path: join(SHOTS, `dashboard-history-${workers}.png`) });
      await page.unroute(/[?&]opt=list/);
      await row.locator('a').click();
      await page.locator('#messages tbody tr').first().waitFor();
      await assertDrawn(page.locator('.panel svg').first(), 120, "the queue's page");
      assert.deepEqual(problems, []);
      await page.close();
    });
  });
}

describe('the status dot', { skip }, () => {
  let server: RunningServer;
  before(async () => {
    server = await startServer();
  });
  after(async () => {
    await server.stop();
    cleanup(server.dir);
  });

  it('is grey until the server first answers, red while it does not, green when it does', async () => {
    let release!: () => void;
    const held = new Promise<void>((r) => (release = r));
    let infos = 0;
    let listed: Promise<unknown> | undefined;
    const { page, problems } = await open(`http://127.0.0.1:${server.port}/dashboard`, {
      // The first /dashboard/info is held, then fails; the next ones get through.
      prepare: (p) => {
        listed = p.waitForResponse(/[?&]opt=list/);
        return p.route(/\/dashboard\/info/, async (route) => (infos++ === 0 ? (await held, await route.abort()) : await route.continue()));
      },
    });
    const dot = page.locator('#live');
    const state = async () => [
      await dot.getAttribute('class'),
      await dot.evaluate((e) => getComputedStyle(e).color),
      await page.locator('#facts').textContent(),
    ];
    await listed; // the queues have answered, the server's facts not yet
    assert.deepEqual(await state(), ['connecting', 'rgb(152, 162, 179)', 'connecting…']);
    release();
    await page.waitForFunction(() => document.getElementById('live')?.className === 'stale');
    assert.deepEqual(await state(), ['stale', 'rgb(255, 180, 169)', 'no answer from the server: trying again…']);
    await page.waitForFunction(() => document.getElementById('live')?.className === '');
    const [, green, facts] = await state();
    assert.equal(green, 'rgb(159, 224, 176)');
    assert.match(facts!, /^v\d+\.\d+\.\d+ · up /);
    // The server goes away.
    await page.route(/[?&]opt=list/, (route) => route.abort());
    await page.waitForFunction(() => document.getElementById('live')?.className === 'stale');
    assert.match((await page.locator('#facts').textContent())!, /^v\d/); // the facts last known stay
    // In words too, not by its colour alone: the numbers on the page are old.
    assert.match((await dot.textContent())!, /^● no answer since \d/);
    await page.unroute(/[?&]opt=list/);
    await page.waitForFunction(() => document.getElementById('live')?.className === '');
    assert.equal(await dot.textContent(), '●');
    assert.deepEqual(problems, []);
    await page.close();
  });

  it('turns red when a request gets no answer, and goes on asking (the page does not wait forever)', async () => {
    const { page, problems } = await open(`http://127.0.0.1:${server.port}/dashboard`, { prepare: (p) => p.clock.install() });
    await page.waitForFunction(() => document.getElementById('live')?.className === '');
    // The server takes the next list request and never answers it.
    const asked = page.waitForRequest(/[?&]opt=list/);
    await page.route(/[?&]opt=list/, () => {});
    await asked;
    await page.clock.fastForward(9_000);
    assert.equal(await page.locator('#live').getAttribute('class'), '', 'still waiting, within the time allowed');
    await page.clock.fastForward(1_500);
    await page.waitForFunction(() => document.getElementById('live')?.className === 'stale');
    // Answers again: the next refresh (a second later) gets through.
    await page.unroute(/[?&]opt=list/);
    await page.clock.fastForward(1_500);
    await page.waitForFunction(() => document.getElementById('live')?.className === '');
    assert.deepEqual(problems, []);
    await page.close();
  });
});
