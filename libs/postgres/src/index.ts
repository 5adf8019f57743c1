export * from './database';
export * from './pg-database';
export * from './pglite-database';
export * from './migrate';
export * from './config';
export * from './purge';
