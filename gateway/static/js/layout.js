// Justified rows: fill each row with tiles at one common height, as close to the target
// height as the aspect ratios allow (the greedy row breaking of Flickr / Google Photos).
// Pure function, no DOM, so the arithmetic is easy to check.

/**
 * @param {number[]} aspects width/height of each item
 * @param {number} width available row width in px
 * @param {number} target target row height in px
 * @param {number} gap horizontal gap between items in px
 * @returns {{width: number, height: number}[]} the box of each item
 */
export function justify(aspects, width, target, gap) {
  const boxes = [];
  let row = [];
  let sum = 0;
  const heightOf = (n, s) => (width - gap * (n - 1)) / s;
  const flush = (items, height) => {
    for (const ar of items) boxes.push({ width: ar * height, height });
  };
  for (const ar of aspects) {
    const withIt = heightOf(row.length + 1, sum + ar);
    if (withIt > target) {
      row.push(ar);
      sum += ar;
      continue;
    }
    // Adding this item brings the row to or below the target: keep whichever height is
    // nearer the target, so rows neither balloon nor shrink to slivers.
    const without = row.length ? heightOf(row.length, sum) : Infinity;
    if (Math.abs(withIt - target) <= Math.abs(without - target)) {
      row.push(ar);
      flush(row, withIt);
      row = [];
      sum = 0;
    } else {
      flush(row, without);
      row = [ar];
      sum = ar;
      if (heightOf(1, ar) <= target) { // a panorama wider than the row fills it alone
        flush(row, heightOf(1, ar));
        row = [];
        sum = 0;
      }
    }
  }
  // The last, incomplete row keeps the target height instead of stretching to the edge.
  if (row.length) flush(row, Math.min(target, heightOf(row.length, sum)));
  return boxes;
}
