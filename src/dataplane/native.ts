// The data plane's typed slice of the native addon (native/src/{tun,udp,poll,ring}.cc).
// Hot calls take integers only and return counts; per-packet results live in the ring descriptors.
import { loadAddon } from '../addon';
import { checkLayout } from './layout';

export interface TunHandle {
  fd: number;
  name: string;
  ifindex: number;
}

export interface UdpHandle {
  fd: number;
  /** Bound local port (the ephemeral one for send sockets). */
  port: number;
}

export interface DataplaneNative {
  layout: Record<string, number>;
  /**
   * Opens/creates a TUN (IFF_TUN|IFF_NO_PI[|IFF_VNET_HDR]), non-blocking; sets TUNSETPERSIST to `persist`
   * and, when txQueueLen > 0, the device queue length.
   */
  tunOpen(name: string, vnetHdr: boolean, persist: boolean, txQueueLen: number): TunHandle;
  tunSetPersist(fd: number, on: boolean): void;
  /** MTU of an interface in this network namespace (SIOCGIFMTU). */
  ifMtu(name: string): number;
  closeFd(fd: number): void;
  /** Binds 0.0.0.0:port (0 = ephemeral), DF clear, bufBytes SO_{RCV,SND}BUF(FORCE). */
  udpOpen(port: number, bufBytes: number): UdpHandle;
  ringRegister(arena: ArrayBuffer, desc: Int32Array, slotSize: number, headroom: number): number;
  ringRelease(ring: number): void;
  /** → packets read into slots 0..n-1, or -errno. mode: TunMode bits. */
  tunRead(ring: number, fd: number, max: number, mode: number): number;
  /**
   * → packets written; STATUS per descriptor. mode: TunMode bits. TCP packets longer than maxPacket
   * (> 0; the TUN MTU) are written as TSO-style segments.
   */
  tunWrite(ring: number, fd: number, n: number, mode: number, maxPacket: number): number;
  /** → datagrams sent; STATUS per descriptor. */
  udpSend(ring: number, n: number): number;
  /** → datagrams received into slots 0..n-1, or -errno. */
  udpRecv(ring: number, fd: number, max: number): number;
  /** Level-triggered readability callback on the calling thread's loop → handle id. */
  pollStart(fd: number, onReadable: (status: number) => void): number;
  pollStop(handle: number): void;
}

let checked: DataplaneNative | undefined;

export function loadDataplaneNative(): DataplaneNative {
  if (checked !== undefined) return checked;
  const addon = loadAddon() as DataplaneNative;
  checkLayout(addon.layout);
  checked = addon;
  return addon;
}
