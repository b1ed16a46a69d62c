// The open-file limit. Go raises the soft RLIMIT_NOFILE to the hard limit at start (Go ≥ 1.19,
// os/rlimit.go), so flanneld never runs with the 1024 default of a login shell or a plain systemd unit;
// tsflanneld does the same through the native addon (native/src/rlimit.cc).
import { loadAddon } from '../addon';

export interface NofileLimit {
  /** Soft limit before the call; -1 = unlimited. */
  before: number;
  soft: number;
  hard: number;
}

interface RlimitAddon {
  raiseNofileLimit(): NofileLimit;
}

/** Raises the soft open-file limit to the hard limit. Throws the errno error of getrlimit/setrlimit. */
export function raiseNofileLimit(): NofileLimit {
  return (loadAddon() as RlimitAddon).raiseNofileLimit();
}
