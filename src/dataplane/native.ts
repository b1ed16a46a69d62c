// The data plane's typed slice of the native addon (native/src/{tun,udp,poll,ring}.cc).
// Hot calls take integers only and return counts; per-packet results live in the ring descriptors.
import { loadAddon } from '../addon';
import { checkLayout } from './layout';

export interface TunHandle {
  fd: number;
  name: string;
  ifindex: number;
  /** TunOffload bits the kernel accepted (0 without the vnet header). */
  offloads: number;
  /** A persistent single-queue device of that name was deleted to create the multi-queue one. */
  replacedSingleQueue: boolean;
}

export interface UdpHandle {
  fd: number;
  /** Bound local port (the ephemeral one for send sockets). */
  port: number;
  /** UDP_GRO was asked for (UdpFlag.GRO) and the kernel took it. */
  gro: boolean;
  /** The kernel knows UDP_SEGMENT (probed; the socket default stays unsegmented). */
  gso: boolean;
}

export interface DataplaneNative {
  layout: Record<string, number>;
  /**
   * Opens/creates a TUN (IFF_TUN|IFF_NO_PI[|IFF_VNET_HDR]), non-blocking; sets TUNSETPERSIST to `persist`
   * and, when txQueueLen > 0, the device queue length. offloads: TunOffload bits wanted (vnet header only;
   * the handle reports what the kernel accepted; always set, so a persistent device forgets old ones).
   */
  tunOpen(name: string, vnetHdr: boolean, persist: boolean, txQueueLen: number, offloads?: number, multiQueue?: boolean): TunHandle;
  tunSetPersist(fd: number, on: boolean): void;
  /** MTU of an interface in this network namespace (SIOCGIFMTU). */
  ifMtu(name: string): number;
  closeFd(fd: number): void;
  /**
   * Binds bindIp:port (bindIp: IPv4 as u32, the published PublicIP so the outer source is what peers expect;
   * 0/absent = 0.0.0.0; port 0 = ephemeral), DF clear, bufBytes SO_{RCV,SND}BUF(FORCE); flags: UdpFlag bits.
   */
  udpOpen(port: number, bufBytes: number, flags?: number, bindIp?: number): UdpHandle;
  /** → ring id. encapLen: encapsulation bytes in front of the inner packet (default 22, VXLAN + Ethernet). */
  ringRegister(arena: ArrayBuffer, desc: Int32Array, slotSize: number, headroom: number, encapLen?: number): number;
  ringRelease(ring: number): void;
  /** → packets read into slots 0..n-1, or -errno. mode: TunMode bits. */
  tunRead(ring: number, fd: number, max: number, mode: number): number;
  /**
   * Descriptors in udpRecv's datagram form (REJECT bits skip segments) → TUN writes made; STATUS per
   * descriptor. mode: TunMode bits. Packets longer than maxPacket (> 0; the TUN MTU) are split (with the
   * vnet header and COALESCE: written as one GSO write the kernel segments).
   */
  tunWrite(ring: number, fd: number, n: number, mode: number, maxPacket: number): number;
  /** → messages sent (with SendMode.GSO one message carries several datagrams); STATUS per descriptor. */
  udpSend(ring: number, n: number, mode?: number): number;
  /** → datagrams received into slots 0..n-1, or -errno. */
  udpRecv(ring: number, fd: number, max: number): number;
  /** → a non-blocking eventfd (the control doorbell of a forwarding thread). */
  eventfdOpen(): number;
  /** Rings the doorbell (from any thread). */
  eventfdSignal(fd: number): void;
  /** Resets the doorbell (the forwarding thread, before it reads its control messages). */
  eventfdDrain(fd: number): void;
  /** → epoll fd watching fds[i] for input, reported as bit i by epollWait (at most 31 fds). */
  epollOpen(fds: Int32Array): number;
  /** Blocks up to timeoutMs (-1 = forever) → bit mask of ready fds, 0 on timeout/EINTR, or -errno. */
  epollWait(ep: number, timeoutMs: number): number;
  /** Sets the nice value of the calling thread only → 0 or errno. */
  threadSetNice(nice: number): number;
}

/** Test entry points over plain buffers (native/src/offload.cc): the split/coalesce code the data plane runs. */
export interface OffloadTestNative {
  /** Folded, uncomplemented one's complement sum of bytes (16-bit, network order). */
  offloadChecksum(bytes: Uint8Array): number;
  /** Splits an IPv4 super-packet: segments [prefix | headers | payload] back to back in out → count, or -1. */
  offloadSplit(pkt: Uint8Array, gsoType: number, gsoSize: number, prefix: Uint8Array, out: Uint8Array, outLens: Int32Array): number;
  /**
   * Coalesces IPv4 packets laid back to back in pkts → TUN writes, each as [virtio_net_hdr | packet] in out.
   * pkts is modified in place (first headers of merged packets), like the arena.
   */
  offloadCoalesce(
    pkts: Uint8Array,
    lens: Int32Array,
    trusted: boolean,
    maxPacket: number,
    uso: boolean,
    out: Uint8Array,
    outLens: Int32Array,
    /** Fail GSO writes with EINVAL, like a kernel whose TUN GSO is broken. */
    refuseGso?: boolean,
  ): number;
}

let checked: DataplaneNative | undefined;

export function loadDataplaneNative(): DataplaneNative {
  if (checked !== undefined) return checked;
  const addon = loadAddon() as DataplaneNative;
  checkLayout(addon.layout);
  checked = addon;
  return addon;
}

export function loadOffloadTestNative(): OffloadTestNative {
  return loadDataplaneNative() as unknown as OffloadTestNative;
}
