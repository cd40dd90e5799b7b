-- Sample rows so that a new install answers at once. Operators add their own
-- with `creditgate bank add`.
INSERT INTO banks (code, name, country, bic, cost, data) VALUES
    ('BOFA',  'Bank of America',         'US', 'BOFAUS3N',    1, '{"headquarters":"Charlotte","founded":1998}'),
    ('HSBC',  'HSBC Holdings',           'GB', 'HBUKGB4B',    1, '{"headquarters":"London","founded":1865}'),
    ('DEUT',  'Deutsche Bank',           'DE', 'DEUTDEFF',    1, '{"headquarters":"Frankfurt","founded":1870}'),
    ('BNPA',  'BNP Paribas',             'FR', 'BNPAFRPP',    1, '{"headquarters":"Paris","founded":2000}'),
    ('MUFG',  'MUFG Bank',               'JP', 'BOTKJPJT',    2, '{"headquarters":"Tokyo","founded":2006}'),
    ('FREE',  'Sample free bank',        NULL, NULL,          0, '{"note":"cost 0: answers without charging"}');
