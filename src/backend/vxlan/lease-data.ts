// The vxlan backend's lease BackendData: `{"VNI":<n>,"VtepMAC":"aa:bb:cc:dd:ee:ff"}` (docs/compat.md §1,
// flannel pkg/backend/vxlan vxlanLeaseAttrs). Readers are as lenient as Go's encoding/json.
import { GoFields, isJsonObject } from '../../subnet/gojson';
import type { LeaseAttrs } from '../../subnet/lease';
import { formatMac, MacParseError, parseMac } from '../../subnet/lease-codec';

export const MAX_VNI = 0xffffff;

export interface VxlanBackendData {
  VNI: number;
  VtepMAC: string; // lowercase aa:bb:cc:dd:ee:ff
}

function vxlanData(data: unknown): VxlanBackendData | null {
  if (!isJsonObject(data)) return null;
  const f = new GoFields(data);
  const vni = f.get('VNI');
  const mac = f.get('VtepMAC');
  if (typeof vni !== 'number' || !Number.isInteger(vni) || vni < 0 || vni > MAX_VNI) return null;
  if (typeof mac !== 'string') return null;
  try {
    return { VNI: vni, VtepMAC: formatMac(parseMac(mac)) };
  } catch (e) {
    if (e instanceof MacParseError) return null;
    throw e;
  }
}

/** The VXLAN peer data of a lease (IPv4 side), or null if it is not a usable VXLAN lease. */
export function vxlanBackendData(attrs: LeaseAttrs): VxlanBackendData | null {
  if (attrs.BackendType !== 'vxlan') return null;
  return vxlanData(attrs.BackendData);
}

/** Same for the IPv6 side (BackendV6Data of a dual-stack lease). */
export function vxlanBackendV6Data(attrs: LeaseAttrs): VxlanBackendData | null {
  if (attrs.BackendType !== 'vxlan') return null;
  return vxlanData(attrs.BackendV6Data);
}
