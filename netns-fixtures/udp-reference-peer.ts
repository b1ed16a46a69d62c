// An independent flannel `udp` peer for interop tests and the demo: a small Python program (no code of
// ours in its packet path) laid out as flanneld's udp backend lays out a host (docs/compat.md §6):
// TUN `flannel0` (IFF_TUN|IFF_NO_PI) with <lease subnet IP>/32, MTU = underlay − 28, one route for the
// whole Network into it, a UDP socket bound to <host IP>:8285; TUN → UDP: the bare inner IPv4 packet
// is the datagram, sent to the PublicIP of the lease whose subnet holds the destination; UDP → TUN:
// the datagram is written as is. Peer routes are given on stdin ("add <subnet> <ip>", "del <subnet>").
import type { ChildProcess } from 'node:child_process';
import { formatIp4, parseIp4Net } from '../src/subnet/ip4';
import type { TestHost } from './testbed';

const PROGRAM = String.raw`
import fcntl, os, select, socket, struct, sys, ipaddress
TUNSETIFF = 0x400454ca
IFF_TUN, IFF_NO_PI = 0x0001, 0x1000
bind_ip, port, dev = sys.argv[1], int(sys.argv[2]), sys.argv[3]
tun = os.open('/dev/net/tun', os.O_RDWR)
fcntl.ioctl(tun, TUNSETIFF, struct.pack('16sH', dev.encode(), IFF_TUN | IFF_NO_PI))
os.set_blocking(tun, False)
sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
sock.bind((bind_ip, port))
sock.setblocking(False)
routes = {}
print('ready', flush=True)
stdin = sys.stdin.fileno()
while True:
    r, _, _ = select.select([tun, sock, stdin], [], [])
    if stdin in r:
        line = sys.stdin.readline()
        if not line:
            break
        w = line.split()
        if w[0] == 'add':
            routes[ipaddress.ip_network(w[1])] = w[2]
        elif w[0] == 'del':
            routes.pop(ipaddress.ip_network(w[1]), None)
        print('ok', flush=True)
    if tun in r:
        for _ in range(64):
            try:
                pkt = os.read(tun, 65535)
            except BlockingIOError:
                break
            if len(pkt) < 20 or pkt[0] >> 4 != 4:
                continue
            dst = ipaddress.ip_address(pkt[16:20])
            for net, ip in routes.items():
                if dst in net:
                    sock.sendto(pkt, (ip, port))
                    break
    if sock in r:
        for _ in range(64):
            try:
                pkt, _src = sock.recvfrom(65535)
            except BlockingIOError:
                break
            os.write(tun, pkt)
`;

export interface UdpReferencePeer {
  readonly dev: string;
  readonly port: number;
  readonly subnet: string;
  readonly publicIp: string;
  /** The lease value flanneld's udp backend writes (no BackendType, no BackendData). */
  readonly leaseValue: string;
  addRoute(subnet: string, publicIp: string): Promise<void>;
  removeRoute(subnet: string): Promise<void>;
  stop(): void;
}

/** Starts the reference peer on `host` for its lease `subnet` inside `network` (its TUN, routes, socket). */
export async function startUdpReferencePeer(
  host: TestHost,
  opts: { subnet: string; network: string; port?: number },
): Promise<UdpReferencePeer> {
  const port = opts.port ?? 8285;
  const dev = 'flannel0';
  const net = parseIp4Net(opts.subnet);
  const child: ChildProcess = host.spawn(['/usr/bin/python3', '-c', PROGRAM, host.underlayIp, String(port), dev], {
    stdio: ['pipe', 'pipe', 'pipe'],
  });
  let out = '';
  let err = '';
  const waiters: Array<() => void> = [];
  child.stdout!.on('data', (c: Buffer) => {
    out += c.toString();
    let nl: number;
    while ((nl = out.indexOf('\n')) >= 0) {
      out = out.slice(nl + 1);
      waiters.shift()?.();
    }
  });
  child.stderr!.on('data', (c: Buffer) => (err += c.toString()));
  const next = (): Promise<void> =>
    new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`udp reference peer on ${host.name} did not answer: ${err}`)), 10000);
      waiters.push(() => {
        clearTimeout(timer);
        resolve();
      });
    });
  await next(); // "ready": the TUN exists
  await host.exec(['ip', 'addr', 'add', `${formatIp4(net.ip)}/32`, 'dev', dev]);
  await host.exec(['ip', 'link', 'set', dev, 'mtu', String(host.mtu - 28), 'up']);
  await host.exec(['ip', 'route', 'add', opts.network, 'dev', dev]);
  const command = async (line: string): Promise<void> => {
    const done = next();
    child.stdin!.write(`${line}\n`);
    await done;
  };
  return {
    dev,
    port,
    subnet: `${formatIp4(net.ip)}/${net.prefixLen}`,
    publicIp: host.underlayIp,
    leaseValue: `{"PublicIP":"${host.underlayIp}","PublicIPv6":null}`,
    addRoute: (subnet, ip) => command(`add ${subnet} ${ip}`),
    removeRoute: (subnet) => command(`del ${subnet}`),
    stop: () => {
      child.kill('SIGTERM');
    },
  };
}
