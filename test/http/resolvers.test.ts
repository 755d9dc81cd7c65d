import { expect } from 'chai';
import { fromHeader, fromPath, fromSubdomain, type HttpRequestLike } from '../../src';

function req(headers: Record<string, string | string[]>, url = '/'): HttpRequestLike {
  return { headers, url };
}

describe('http resolvers', () => {
  it('fromHeader reads x-tenant-slug by default, any case of the name, trimmed; absent or empty names no tenant', () => {
    expect(fromHeader()(req({ 'x-tenant-slug': 'acme' }))).to.equal('acme');
    expect(fromHeader('X-Tenant')(req({ 'x-tenant': ' acme ' }))).to.equal('acme');
    expect(fromHeader()(req({}))).to.equal(undefined);
    expect(fromHeader()(req({ 'x-tenant-slug': '' }))).to.equal('');
    // A header sent twice is joined, which no slug rule accepts.
    expect(fromHeader()(req({ 'x-tenant-slug': ['acme', 'globex'] }))).to.equal('acme, globex');
    expect(() => fromHeader('bad header')).to.throw(TypeError);
  });

  it('fromSubdomain: the label before the base domain, lower case, port and trailing dot ignored; bare domain, www and foreign hosts name none', () => {
    const resolve = fromSubdomain({ baseDomain: 'App.Example.com' });
    expect(resolve(req({ host: 'acme.app.example.com' }))).to.equal('acme');
    expect(resolve(req({ host: 'ACME.App.Example.COM:8443' }))).to.equal('acme');
    expect(resolve(req({ host: 'acme.app.example.com.' }))).to.equal('acme');
    expect(resolve(req({ host: 'app.example.com' }))).to.equal(undefined);
    expect(resolve(req({ host: 'www.app.example.com:80' }))).to.equal(undefined);
    expect(resolve(req({ host: 'acme.other.com' }))).to.equal(undefined);
    expect(resolve(req({ host: 'evilapp.example.com' }))).to.equal(undefined);
    expect(resolve(req({ host: '[::1]:3000' }))).to.equal(undefined);
    expect(resolve(req({}))).to.equal(undefined);
    // Two labels are handed on as one name, which validation refuses.
    expect(resolve(req({ host: 'a.b.app.example.com' }))).to.equal('a.b');
    expect(fromSubdomain({ baseDomain: 'example.com', ignore: ['www', 'api'] })(req({ host: 'api.example.com' }))).to.equal(undefined);
    expect(() => fromSubdomain({ baseDomain: '' })).to.throw(TypeError);
  });

  it('fromPath: the first segment, or the one after the prefix; other paths name none', () => {
    expect(fromPath()(req({}, '/acme/clients?x=1'))).to.equal('acme');
    expect(fromPath()(req({}, '/acme'))).to.equal('acme');
    expect(fromPath()(req({}, '/'))).to.equal(undefined);
    const prefixed = fromPath({ prefix: '/t/' });
    expect(prefixed(req({}, '/t/acme/clients/7'))).to.equal('acme');
    expect(prefixed(req({}, '/t/'))).to.equal(undefined);
    expect(prefixed(req({}, '/tenants/acme'))).to.equal(undefined);
    expect(prefixed(req({}, '/clients'))).to.equal(undefined);
    expect(fromPath({ prefix: 'api/t' })(req({}, '/api/t/acme-eu/x'))).to.equal('acme-eu');
  });
});
