export * from './config';
export * from './logger';
export * from './metrics';
export * from './readiness';
export * from './http';
export * from './lifecycle';
export * from './auth';
export * from './internal-auth';
