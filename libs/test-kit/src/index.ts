export * from './ws-client';
export * from './tcp-fault-proxy';
