// How values read in the interface.
import { timestampDate, type Timestamp } from "@bufbuild/protobuf/wkt";
import type { Money } from "./gen/parley/common/v1/common_pb.js";

/** The id at the end of a resource name: `users/u/conversations/c` -> `c`. */
export function lastId(name: string): string {
  return name.slice(name.lastIndexOf("/") + 1);
}

export function when(timestamp: Timestamp | undefined): string {
  if (!timestamp) return "";
  return timestampDate(timestamp).toLocaleString(undefined, { dateStyle: "medium", timeStyle: "short" });
}

/** Money as a decimal string in its currency; exact (micro-units are integers). */
export function money(value: Money | undefined): string {
  if (!value) return "";
  return `${microsToDecimal(value.micros)} ${value.currencyCode}`;
}

export function microsToDecimal(micros: bigint): string {
  const negative = micros < 0n;
  const abs = negative ? -micros : micros;
  const whole = abs / 1_000_000n;
  const fraction = (abs % 1_000_000n).toString().padStart(6, "0").replace(/0{1,4}$/, "");
  return `${negative ? "-" : ""}${whole}.${fraction.length < 2 ? fraction.padEnd(2, "0") : fraction}`;
}
