// The one registry of backend plug-ins, keyed by flannel's Backend.Type. The daemon resolves the
// network config's Backend object here and talks to the result only; a type or field tsflanneld
// cannot honour is refused with a BackendConfigError naming it and what to do.
import type { BackendConfig } from '../subnet/config';
import { allocPlugin } from './alloc';
import { BackendConfigError, BackendFields, type BackendPlugin, type ResolvedBackend } from './backend';
import { hostGwPlugin } from './host-gw';
import { udpPlugin } from './udp';
import { vxlanPlugin } from './vxlan';

const PLUGINS: ReadonlyMap<string, BackendPlugin> = new Map([vxlanPlugin, udpPlugin, hostGwPlugin, allocPlugin].map((p) => [p.type, p]));

/** Backend types flannel has that tsflanneld does not implement, with what to use instead. */
const NOT_IMPLEMENTED: Readonly<Record<string, string>> = {
  ipip: 'use "vxlan" (an encapsulated overlay) or "host-gw" when all nodes share one L2 segment',
  wireguard: 'use "vxlan" and encrypt the underlay yourself, or keep flanneld on these nodes',
  ipsec: 'use "vxlan" and encrypt the underlay yourself, or keep flanneld on these nodes',
  extension: 'keep flanneld on these nodes',
  'aws-vpc': 'keep flanneld on these nodes (cloud route tables are not managed by tsflanneld)',
  gce: 'keep flanneld on these nodes (cloud route tables are not managed by tsflanneld)',
  'ali-vpc': 'keep flanneld on these nodes (cloud route tables are not managed by tsflanneld)',
  'tencent-vpc': 'keep flanneld on these nodes (cloud route tables are not managed by tsflanneld)',
};

/** The Backend.Type values tsflanneld implements. */
export function backendTypes(): string[] {
  return [...PLUGINS.keys()];
}

/**
 * Parses and validates the Backend object with its plug-in. Throws BackendConfigError for an unknown
 * or unimplemented type, a refused setting, or a field the backend does not have.
 */
export function resolveBackend(backend: BackendConfig): ResolvedBackend {
  const supported = backendTypes()
    .map((t) => `"${t}"`)
    .join(', ');
  if (backend.type === '') {
    throw new BackendConfigError(
      `Backend.Type is missing: set it to one of ${supported} (flannel selects "udp" only when Backend itself is absent)`,
    );
  }
  const plugin = PLUGINS.get(backend.type);
  if (plugin === undefined) {
    const hint = NOT_IMPLEMENTED[backend.type];
    throw new BackendConfigError(
      hint !== undefined
        ? `Backend.Type "${backend.type}" is not implemented by tsflanneld (supported: ${supported}); ${hint}`
        : `Backend.Type "${backend.type}" is unknown (supported: ${supported}); check the spelling`,
    );
  }
  const fields = new BackendFields(backend.type, backend.fields);
  const resolved = plugin.parse(fields);
  const unknown = fields.unread();
  if (unknown.length > 0) {
    const names = unknown.map((k) => `Backend.${k}`).join(', ');
    throw new BackendConfigError(
      `${names} ${unknown.length === 1 ? 'is not a setting' : 'are not settings'} of the "${backend.type}" backend: remove ${unknown.length === 1 ? 'it' : 'them'} (flanneld ignores unknown fields; tsflanneld refuses them so a typo cannot go unnoticed)`,
    );
  }
  return resolved;
}
