export * from './ws-client';
