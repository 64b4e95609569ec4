-- A third kind of site connection: an Azure subscription's resource group, where the cloud VMs are powered off,
-- started and deleted through Azure Resource Manager. `url` is the management endpoint with the resource group's
-- path; `authority` the identity provider's address with the tenant, from which the service principal's token comes.
alter table site_connections add column authority text;
