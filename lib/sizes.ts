/**
 * About how many bytes a cached value holds: strings at two bytes a character, 16 per other
 * primitive, 64 per object or array, nested up to a few levels. For lru-cache's `sizeCalculation`:
 * a cache bounded by entries alone lets a few large values take any amount of memory.
 */
export function approximateBytes(value: unknown, depth = 4): number {
  if (typeof value === "string") {
    return 2 * value.length;
  }
  if (value === null || typeof value !== "object") {
    return 16;
  }
  if (depth === 0) {
    return 64;
  }
  let bytes = 64;
  for (const item of Array.isArray(value) ? value : Object.values(value)) {
    bytes += approximateBytes(item, depth - 1);
  }
  return bytes;
}
