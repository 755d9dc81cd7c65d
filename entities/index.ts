export { Client } from './client';
export { Plan } from './plan';
export { Project } from './project';
