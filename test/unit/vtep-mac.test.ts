import t, { Test } from 'tap';
import { promises as fs } from 'node:fs';
import * as path from 'node:path';
import { VtepMacError, generateVtepMac, loadOrCreateVtepMac, vtepMacPath } from '../../src/subnet/vtep-mac';
import { parseMac } from '../../src/subnet/lease-codec';

async function tmpDir(t: Test): Promise<string> {
  const dir = await fs.mkdtemp(path.join(process.env.TMPDIR ?? '/tmp', 'tsflanneld-vtep-mac-'));
  t.teardown(() => fs.rm(dir, { recursive: true, force: true }));
  return dir;
}

const MAC_RE = /^[0-9a-f]{2}(:[0-9a-f]{2}){5}$/;

t.test('generated MACs are unicast and locally administered', async (t) => {
  t.same(Array.from(generateVtepMac(() => Uint8Array.from([0xff, 1, 2, 3, 4, 5]))), [0xfe, 1, 2, 3, 4, 5]);
  t.same(Array.from(generateVtepMac(() => Uint8Array.from([0x00, 0xaa, 0xbb, 0xcc, 0xdd, 0xee]))), [0x02, 0xaa, 0xbb, 0xcc, 0xdd, 0xee]);
  t.same(Array.from(generateVtepMac(() => Uint8Array.from([0x11, 0, 0, 0, 0, 0]))), [0x12, 0, 0, 0, 0, 0]);
  const bad: number[] = [];
  for (let i = 0; i < 200; i++) {
    const b0 = generateVtepMac()[0]!;
    if ((b0 & 0x01) !== 0 || (b0 & 0x02) === 0) bad.push(b0);
  }
  t.same(bad, []);
  t.throws(() => generateVtepMac(() => new Uint8Array(4)), /want 6/);
});

t.test('path sits next to the subnet file', async (t) => {
  t.equal(vtepMacPath('/run/flannel/subnet.env'), '/run/flannel/tsflanneld-vtep-mac-subnet');
  t.equal(vtepMacPath('/run/flannel/net2.env'), '/run/flannel/tsflanneld-vtep-mac-net2');
  t.equal(vtepMacPath('/var/lib/x/subnet'), '/var/lib/x/tsflanneld-vtep-mac-subnet');
});

t.test('created once, then persisted', async (t) => {
  const dir = await tmpDir(t);
  const file = path.join(dir, 'nested', 'tsflanneld-vtep-mac-subnet');
  const first = await loadOrCreateVtepMac(file);
  t.equal(first.created, true);
  t.equal(first.warning, null);
  t.match(first.mac, MAC_RE);
  t.equal(parseMac(first.mac)[0]! & 0x03, 0x02);
  t.equal(await fs.readFile(file, 'utf8'), `${first.mac}\n`);

  const again = await loadOrCreateVtepMac(file);
  t.same(again, { mac: first.mac, created: false, warning: null });

  // Hand-edited content in another accepted form is normalised but kept.
  await fs.writeFile(file, '  0A-00-27-00-00-01 \n');
  t.same(await loadOrCreateVtepMac(file), { mac: '0a:00:27:00:00:01', created: false, warning: null });
  t.same((await fs.readdir(path.dirname(file))).length, 1, 'no temp files left');
});

t.test('corrupt or unusable content is regenerated with a warning', async (t) => {
  const dir = await tmpDir(t);
  const file = path.join(dir, 'mac');
  for (const content of ['', 'garbage\n', 'ae:12:34:56:78\n', '01:00:5e:00:00:01\n', '00:00:00:00:00:00\n', '\u0000\u0000']) {
    await fs.writeFile(file, content);
    const r = await loadOrCreateVtepMac(file, () => Uint8Array.from([0x10, 0x20, 0x30, 0x40, 0x50, 0x60]));
    t.same({ mac: r.mac, created: r.created }, { mac: '12:20:30:40:50:60', created: true }, JSON.stringify(content));
    t.match(r.warning, /does not hold a valid unicast MAC/);
    t.equal(await fs.readFile(file, 'utf8'), '12:20:30:40:50:60\n');
  }
});

t.test('unreadable file: regenerate; unwritable: clear error', async (t) => {
  const dir = await tmpDir(t);
  const asDir = path.join(dir, 'isadir');
  await fs.mkdir(path.join(asDir, 'child'), { recursive: true });
  // Cannot read (a directory) and cannot replace it either.
  await t.rejects(loadOrCreateVtepMac(asDir), { message: new RegExp(`cannot write VTEP MAC file ${asDir}`) });

  const blocker = path.join(dir, 'plain');
  await fs.writeFile(blocker, 'x');
  await t.rejects(loadOrCreateVtepMac(path.join(blocker, 'mac')), VtepMacError);
  await t.rejects(loadOrCreateVtepMac(path.join(blocker, 'mac')), /cannot write VTEP MAC file/);

  // A self-referencing symlink cannot be read (ELOOP) but can be replaced.
  const loop = path.join(dir, 'loop');
  await fs.symlink('loop', loop);
  const r = await loadOrCreateVtepMac(loop, () => Uint8Array.from([2, 0, 0, 0, 0, 9]));
  t.same({ mac: r.mac, created: r.created }, { mac: '02:00:00:00:00:09', created: true });
  t.match(r.warning, /cannot read VTEP MAC file .*loop/);
  t.equal(await fs.readFile(loop, 'utf8'), '02:00:00:00:00:09\n');

  const emptyDir = path.join(dir, 'emptydir');
  await fs.mkdir(emptyDir);
  // rename(2) may replace an empty directory only with a directory, so this still fails clearly.
  await t.rejects(loadOrCreateVtepMac(emptyDir), /cannot write VTEP MAC file/);
});
