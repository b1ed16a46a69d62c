// Writes fake flannel peer leases into etcd, as many nodes would: run inside a testbed host's
// namespace by the control-plane benchmark (bench/route-scale.ts) and the scale integration test.
//   node dist/netns-fixtures/lease-loader.js <endpoint> <prefix> <mode> <first> <count> [concurrency]
// mode "load": puts leases first..first+count-1 in transactions of 100 (the "present at start" set);
// mode "put": <count> concurrent single puts (a burst); mode "delete": <count> concurrent deletes.
// Lease i is 10.<i>>8>.<i&255>.0/24 (skipping 10.0.0.0/24), PublicIP 203.0.113.<i%250+1>, a VtepMAC
// derived from i, one etcd lease with a 24 h TTL (flanneld's). Prints one JSON line:
// {"startedAt": epoch ms when the writes began, "doneAt": epoch ms, "writes": n, "errors": n}.
import { Etcd3 } from 'etcd3';

export function leaseSubnet(i: number): string {
  const n = i + 1; // 10.0.0.0/24 stays free
  return `10.${(n >> 8) & 255}.${n & 255}.0/24`;
}

export function leaseValue(i: number): string {
  const mac = ['0e', '00', ((i >> 16) & 255).toString(16), ((i >> 8) & 255).toString(16), (i & 255).toString(16), '01'];
  return JSON.stringify({
    PublicIP: `203.0.113.${(i % 250) + 1}`,
    PublicIPv6: null,
    BackendType: 'vxlan',
    BackendData: { VNI: 1, VtepMAC: mac.map((b) => b.padStart(2, '0')).join(':') },
  });
}

async function main(): Promise<void> {
  const [endpoint, prefix, mode, firstArg, countArg, concArg] = process.argv.slice(2);
  if (!endpoint || !prefix || !mode || firstArg === undefined || countArg === undefined) {
    throw new Error('usage: lease-loader <endpoint> <prefix> load|put|delete <first> <count> [concurrency]');
  }
  const first = Number(firstArg);
  const count = Number(countArg);
  const client = new Etcd3({ hosts: endpoint });
  const key = (i: number): Buffer => Buffer.from(`${prefix}/subnets/${leaseSubnet(i).replace('/', '-')}`);
  let errors = 0;
  let lastError = '';
  const note = (e: unknown): void => {
    errors++;
    lastError = (e as Error).message;
  };
  const granted = mode === 'delete' ? null : await client.leaseClient.leaseGrant({ TTL: 86400 });
  const startedAt = Date.now();
  if (mode === 'load') {
    const concurrency = Number(concArg ?? 4);
    let next = first;
    const end = first + count;
    const worker = async (): Promise<void> => {
      while (next < end) {
        const from = next;
        const to = Math.min(end, from + 100);
        next = to;
        const success = [];
        for (let i = from; i < to; i++)
          success.push({ request_put: { key: key(i), value: Buffer.from(leaseValue(i)), lease: granted!.ID } });
        await client.kv.txn({ compare: [], success, failure: [] }).catch(note);
      }
    };
    await Promise.all(Array.from({ length: concurrency }, worker));
  } else if (mode === 'put') {
    const ops = [];
    for (let i = first; i < first + count; i++) {
      ops.push(client.kv.put({ key: key(i), value: Buffer.from(leaseValue(i)), lease: granted!.ID }).catch(note));
    }
    await Promise.all(ops);
  } else if (mode === 'delete') {
    const ops = [];
    for (let i = first; i < first + count; i++) ops.push(client.kv.deleteRange({ key: key(i) }).catch(note));
    await Promise.all(ops);
  } else {
    throw new Error(`unknown mode ${mode}`);
  }
  const doneAt = Date.now();
  process.stdout.write(`${JSON.stringify({ startedAt, doneAt, writes: count, errors, lastError })}\n`);
  client.close();
}

if (require.main === module) {
  main().catch((e: unknown) => {
    process.stderr.write(`lease-loader: ${e instanceof Error ? e.message : String(e)}\n`);
    process.exit(1);
  });
}
