import { TSchema } from '@sinclair/typebox';
import { ErrorBody, withoutIds } from '@parley/contracts';

// The schema pieces the public routes share.

/** A contract schema as a route's schema: a self-contained copy, without `$id`s (see withoutIds). */
export const s = <T extends TSchema>(schema: T): T => withoutIds(schema);
export const errors = {
  400: s(ErrorBody),
  401: s(ErrorBody),
  403: s(ErrorBody),
  404: s(ErrorBody),
  429: s(ErrorBody),
  503: s(ErrorBody),
};
/** A route that takes a body also answers 413 (over the body limit). */
export const bodyErrors = { ...errors, 413: s(ErrorBody) };
export const secured = [{ bearer: [] as string[] }];
