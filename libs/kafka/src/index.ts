export * from './bus';
export * from './codec';
export * from './kafka-client';
export * from './kafka-bus';
export * from './memory-bus';
export * from './retry';
export * from './topics';
export * from './broker';
