// The one median and p95 of the tests and the benchmark.
import { describe, expect, it } from 'vitest';
import { median, p95, summarize } from './stats.js';

describe('the statistics', () => {
  it('take the middle value, or the mean of the two middle ones, whatever the order', () => {
    expect(median([5, 1, 3])).toBe(3);
    expect(median([4, 1, 3, 2])).toBe(2.5);
    expect(median([])).toBeNaN();
  });

  it('take p95 by nearest rank', () => {
    const hundred = Array.from({ length: 100 }, (_, i) => 100 - i);
    expect(p95(hundred)).toBe(95);
    // Ten values: the rank is ceil(9.5) = 10, the largest.
    expect(p95([1, 2, 3, 4, 5, 6, 7, 8, 9, 50])).toBe(50);
    expect(summarize([3, 1, 2])).toEqual({ median: 2, min: 1, max: 3, n: 3 });
  });
});
