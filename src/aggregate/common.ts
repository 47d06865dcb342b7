/**
 * What every aggregation file shares (imported by aggregate.ts and general.ts, importing
 * neither, so the two do not import each other).
 */

export class AggregationError extends Error {
  static override name = 'AggregationError'
  override name = 'AggregationError'
}

/** Probability floor of the product rule, relative to 1/V: p_e(t) >= PRODUCT_EPSILON / V. */
export const PRODUCT_EPSILON = 1e-12
