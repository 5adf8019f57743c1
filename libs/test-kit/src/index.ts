export * from './ws-client';
export * from './tcp-fault-proxy';
export * from './seeded-random';
